"""Tenants: who a request is for. API keys (keys.py), checking them (auth.py), and the
limits counted per tenant and per key (limits.py) build on this."""

from guard.tenancy.keys import Role
from guard.tenancy.tenants import Principal, Tenant

__all__ = ["Principal", "Role", "Tenant"]

"""Tenants: who a request is for. API keys, roles and limits build on this."""

from guard.tenancy.tenants import Tenant

__all__ = ["Tenant"]

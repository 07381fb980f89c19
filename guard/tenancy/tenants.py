from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from guard.settings import LimitSettings
from guard.tenancy.keys import Role

NO_LIMITS = LimitSettings()


@dataclass(frozen=True, slots=True)
class Tenant:
    """A team using guard: its id and the attributes policies read (``commercial``,
    ``tier``, allowed models, data classes…)."""

    id: str
    attributes: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def get(self, name: str) -> Any:
        return self.id if name == "id" else self.attributes.get(name)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who sent a request (an authenticated key): what it may do, the tenant it acts
    for, and the limits it counts against (its key's and its tenant's)."""

    key_id: str
    role: Role
    tenant: Tenant | None = None
    key_limits: LimitSettings = NO_LIMITS
    tenant_limits: LimitSettings = NO_LIMITS

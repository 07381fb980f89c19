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


_COUNTED = ("requests_per_minute", "tokens_per_minute", "tokens_per_day", "concurrent_streams")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who sent a request (an authenticated key): what it may do, the tenant it acts
    for, and the limits it counts against (its key's and its tenant's).

    Made once per key read (``principal``), with what the limits need worked out then:
    ``counted``, the (subject, limits) pairs that have a limit to count, and whether a
    token or stream limit is among them. A request pays for none of that."""

    key_id: str
    role: Role
    tenant: Tenant | None = None
    key_limits: LimitSettings = NO_LIMITS
    tenant_limits: LimitSettings = NO_LIMITS
    counted: tuple[tuple[str, LimitSettings], ...] = ()
    counts_tokens: bool = False
    counts_streams: bool = False


def principal(
    key_id: str,
    role: Role,
    tenant: Tenant | None = None,
    key_limits: LimitSettings = NO_LIMITS,
    tenant_limits: LimitSettings = NO_LIMITS,
) -> Principal:
    pairs = [(f"key:{key_id}", key_limits)]
    if tenant is not None:
        pairs.append((f"tenant:{tenant.id}", tenant_limits))
    counted = tuple((s, lim) for s, lim in pairs if any(getattr(lim, n) for n in _COUNTED))
    return Principal(
        key_id,
        role,
        tenant,
        key_limits,
        tenant_limits,
        counted,
        any(lim.tokens_per_minute or lim.tokens_per_day for _, lim in counted),
        any(lim.concurrent_streams for _, lim in counted),
    )

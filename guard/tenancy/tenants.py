from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True, slots=True)
class Tenant:
    """A team using guard: its id and the attributes policies read (``commercial``,
    ``tier``, allowed models, data classes…)."""

    id: str
    attributes: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def get(self, name: str) -> Any:
        return self.id if name == "id" else self.attributes.get(name)

"""One registry for detector factories: adding a detector is one module and one entry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from guard.detectors.base import Detector
from guard.errors import ConfigError

DetectorFactory = Callable[[Mapping[str, Any]], Detector]


class DetectorRegistry:
    def __init__(self) -> None:
        self._factories: dict[str, DetectorFactory] = {}

    @classmethod
    def builtin(cls) -> DetectorRegistry:
        """The detectors guard ships; each later detector module adds its entry here."""
        return cls()

    def register(self, name: str, factory: DetectorFactory) -> None:
        if name in self._factories:
            raise ValueError(f"detector {name!r} is already registered")
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def create(self, enabled: Mapping[str, Mapping[str, Any]]) -> list[Detector]:
        """Build the enabled detectors at startup; a load failure stops the start."""
        detectors: list[Detector] = []
        for name, options in enabled.items():
            factory = self._factories.get(name)
            if factory is None:
                known = ", ".join(self.names()) or "none"
                raise ConfigError(f"detectors.{name}: unknown detector (registered: {known})")
            detectors.append(factory(options))
        return detectors

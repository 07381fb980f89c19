"""One registry for detector factories: adding a detector is one module and one entry.

A detector gets its settings from two places: guard's settings (``detectors.NAME``:
model paths, devices, threads; one per process) and each policy that needs it (the
policy file's ``detectors.NAME``: what to look for). The registry validates a
policy's part against the detector's own config model, so that a policy bundle is
checked without loading any model, and builds the detector from both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from guard.detectors.base import Detector
from guard.errors import ConfigError

DetectorFactory = Callable[[Mapping[str, Any], Sequence[BaseModel]], Detector]


class NoPolicyConfig(BaseModel):
    """For detectors a policy only names: no settings of its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def options_reason(exc: ValidationError) -> str:
    """A detector's settings error, every problem named by its key, never its value."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]
        for e in exc.errors(include_url=False, include_input=False)
    )


def _open_labels(_: Sequence[BaseModel]) -> frozenset[str] | None:
    return None


@dataclass(frozen=True, slots=True)
class DetectorEntry:
    """``factory(options, configs)`` builds the detector from guard's settings for it
    and every policy's validated config; ``labels(configs)`` names what it can report
    with those configs (None: any label, e.g. a classifier's own), so that a policy
    naming a label it never reports fails its check."""

    factory: DetectorFactory
    config: type[BaseModel] = NoPolicyConfig
    labels: Callable[[Sequence[BaseModel]], frozenset[str] | None] = _open_labels


class DetectorRegistry:
    def __init__(self) -> None:
        self._entries: dict[str, DetectorEntry] = {}

    @classmethod
    def builtin(cls) -> DetectorRegistry:
        """The detectors guard ships; each detector module adds its entry here."""
        from guard.detectors import patterns, pii, toxicity  # noqa: PLC0415  # their libraries

        registry = cls()
        registry.register("patterns", patterns.ENTRY)
        registry.register("pii", pii.ENTRY)
        registry.register("toxicity", toxicity.ENTRY)
        return registry

    def register(self, name: str, entry: DetectorEntry) -> None:
        if name in self._entries:
            raise ValueError(f"detector {name!r} is already registered")
        self._entries[name] = entry

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, name: str) -> DetectorEntry:
        found = self._entries.get(name)
        if found is None:
            known = ", ".join(self.names()) or "none"
            raise ConfigError(f"unknown detector {name!r} (registered: {known})")
        return found

    def build(
        self, name: str, options: Mapping[str, Any], configs: Sequence[BaseModel] = ()
    ) -> Detector:
        """One detector; a load failure stops the start (or the reload), not a request."""
        return self.entry(name).factory(options, configs)

    def create(self, enabled: Mapping[str, Mapping[str, Any]]) -> list[Detector]:
        """The detectors named in guard's settings, with no policy configs (a fixed
        policy engine given to the app runs them all)."""
        detectors: list[Detector] = []
        for name, options in enabled.items():
            try:
                detectors.append(self.build(name, options))
            except ConfigError as exc:
                raise ConfigError(f"detectors.{name}: {exc}") from None
        return detectors

"""Real Detector and PolicyEngine implementations for tests (no mocks).

``MarkerDetector`` reports the word ``forbidden`` as BANNED and every ``secret-XXXX``
token as SECRET with its span; ``MarkerPolicy`` blocks BANNED and redacts SECRET.
``StampDetector`` finds nothing and says its version, as a classifier does.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from guard.detectors import Direction, Finding, ScanContext
from guard.detectors.registry import DetectorEntry, DetectorRegistry
from guard.detectors.runner import ScanResult
from guard.policy import Action, Decision, Redaction

_SECRET = re.compile(r"secret-\w{4}")


class MarkerDetector:
    name = "marker"

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.directions = frozenset(
            Direction(d) for d in options.get("directions", list(Direction))
        )
        self.delay = float(options.get("delay", 0.0))
        self.seen: dict[Direction, list[list[str]]] = {d: [] for d in Direction}
        self._lock = threading.Lock()

    async def detect(self, texts: Sequence[str], ctx: ScanContext) -> list[Finding]:
        with self._lock:
            self.seen[ctx.direction].append(list(texts))
        if self.delay:
            await asyncio.sleep(self.delay)
        findings = []
        for index, text in enumerate(texts):
            if "forbidden" in text:
                findings.append(Finding("marker", "BANNED", 1.0, index))
            findings.extend(
                Finding("marker", "SECRET", 0.9, index, m.span()) for m in _SECRET.finditer(text)
            )
        return findings

    def texts(self, direction: Direction) -> list[str]:
        with self._lock:
            return [text for call in self.seen[direction] for text in call]


class StampDetector:
    """A ``Versioned`` detector: what the audit trail records for it is ``release``,
    read again for each exchange (a test may change it, as a device fallback would).
    It ``Closes``, counting how often."""

    name = "stamp"
    RELEASE = "stamp-model@rev1 (apache-2.0; cpu)"

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.directions = frozenset(
            Direction(d) for d in options.get("directions", list(Direction))
        )
        self.release = self.RELEASE
        self.closed = 0

    async def detect(self, texts: Sequence[str], ctx: ScanContext) -> list[Finding]:
        return []

    def version(self) -> str:
        return self.release

    def close(self) -> None:
        self.closed += 1


class BrokenDetector:
    name = "broken"
    directions = frozenset(Direction)

    def __init__(self, options: Mapping[str, Any]) -> None:
        pass

    async def detect(self, texts: Sequence[str], ctx: ScanContext) -> list[Finding]:
        raise RuntimeError(f"cannot read {texts[0] if texts else ''}")


class MarkerPolicy:
    version = "test:markers"

    def decide(self, scan: ScanResult, ctx: ScanContext) -> Decision:
        if scan.failed:
            return Decision(Action.BLOCK, ("fail-closed",), "scan failed", 503)
        labels = {f.label for f in scan.findings}
        if "BANNED" in labels:
            return Decision(
                Action.BLOCK, ("no-forbidden",), f"Blocked: forbidden word in {ctx.direction}"
            )
        reds = tuple(
            Redaction(f.text_index, f.span[0], f.span[1], "<SECRET>")
            for f in scan.findings
            if f.label == "SECRET" and f.span
        )
        if reds:
            return Decision(Action.REDACT, ("redact-secrets",), redactions=reds)
        return Decision()


def marker_registry() -> tuple[DetectorRegistry, dict[str, Any]]:
    """guard's registry plus the test detectors; ``made`` collects the test detectors
    it built."""
    made: dict[str, Any] = {}
    registry = DetectorRegistry.builtin()  # the bundled policies need guard's own detectors

    def build(cls: type) -> DetectorEntry:
        def factory(options: Mapping[str, Any], configs: Sequence[object]) -> Any:
            made[cls.name] = cls(options)
            return made[cls.name]

        return DetectorEntry(factory)

    registry.register("marker", build(MarkerDetector))
    registry.register("broken", build(BrokenDetector))
    registry.register("stamp", build(StampDetector))
    return registry, made

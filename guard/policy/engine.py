"""The policy hook: ``PolicyEngine.decide`` turns a scan into a ``Decision``.

The engine that reads policy files plugs in here; until one is configured,
``AllowAll`` allows what was scanned and blocks what could not be (fail closed).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from guard.detectors.base import ScanContext
from guard.detectors.runner import ScanResult


class Action(enum.IntEnum):
    """Ordered by strictness: when several rules match, the highest wins."""

    ALLOW = 0
    FLAG = 1
    REDACT = 2
    BLOCK = 3


@dataclass(frozen=True, slots=True)
class Redaction:
    """Replace ``texts[text_index][start:end]`` with ``replacement``."""

    text_index: int
    start: int
    end: int
    replacement: str


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action = Action.ALLOW
    rule_ids: tuple[str, ...] = ()
    message: str = ""
    status: int = 403
    redactions: tuple[Redaction, ...] = ()

    @property
    def blocks(self) -> bool:
        return self.action is Action.BLOCK


ALLOW = Decision()


class PolicyEngine(Protocol):
    @property
    def version(self) -> str:
        """The policy bundle's version, recorded with every decision."""
        ...

    def decide(self, scan: ScanResult, ctx: ScanContext) -> Decision: ...


class AllowAll:
    """No policies loaded: allow scanned text, block text a detector failed to scan."""

    version = "builtin:allow-all"

    def decide(self, scan: ScanResult, ctx: ScanContext) -> Decision:
        if scan.failed:
            return Decision(
                action=Action.BLOCK,
                rule_ids=("guard.detector_failed",),
                message="The content could not be checked and was not forwarded.",
                status=503,
            )
        return ALLOW

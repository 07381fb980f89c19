"""The Detector contract: ``detect(texts, ctx) -> list[Finding]``."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from guard.registry.cards import ModelCard
from guard.tenancy import Tenant


class Direction(enum.StrEnum):
    INPUT = "input"
    OUTPUT = "output"


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a detector found: an entity type or class, never the raw value."""

    detector: str
    label: str
    score: float
    text_index: int
    span: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score must lie in [0, 1], got {self.score}")


@dataclass(frozen=True, slots=True)
class ScanContext:
    """What a detector may know about the exchange besides the texts."""

    direction: Direction
    route: str
    model: ModelCard
    stream: bool
    tenant: Tenant | None = None  # None: the request carried no tenant


@runtime_checkable
class Detector(Protocol):
    """Pure function of its input and its loaded model; CPU-heavy work runs off the loop."""

    name: str
    directions: frozenset[Direction]

    async def detect(self, texts: Sequence[str], ctx: ScanContext) -> list[Finding]: ...


@runtime_checkable
class Incremental(Protocol):
    """A detector that can say how much of a text's end may still become (part of) a
    finding when more text follows: a stream then holds back only that tail."""

    def holdback(self, text: str) -> int: ...


@runtime_checkable
class Inline(Protocol):
    """A detector that can answer at once, on the event loop, where the texts are small
    enough (pattern matching on a short prompt): no task, no timer. Code that runs on
    the loop cannot be interrupted by a timeout anyway; ``None`` means "await detect".
    The runner runs the inline scans of one turn of the loop together, back to back."""

    def scan_inline(self, texts: Sequence[str]) -> list[Finding] | None: ...


@runtime_checkable
class Describes(Protocol):
    """A detector that reports what it has loaded and can find (/readyz)."""

    def describe(self) -> dict[str, object]: ...


@runtime_checkable
class Closes(Protocol):
    """A detector that holds something to let go of when guard stops (a classifier's
    worker thread). A detector a reload replaces lets go when the last exchange that
    used it drops it; this is for the ones in force at the stop."""

    def close(self) -> None: ...


@runtime_checkable
class Versioned(Protocol):
    """A detector that can say what produced its findings (model name, revision, licence
    and device) for the audit trail, so that an old decision can be traced to the model
    that made it. Called for every exchange it scans: return a string made at load."""

    def version(self) -> str: ...

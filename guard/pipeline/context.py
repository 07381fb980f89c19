"""Per-request state. Everything a request learns lives here, never on shared objects."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from guard.detectors.base import Direction, ScanContext
from guard.detectors.runner import NOTHING_SCANNED, ScanResult
from guard.policy.engine import ALLOW, Decision
from guard.protocols.base import Adapter
from guard.registry.cards import ModelCard


@dataclass(frozen=True, slots=True)
class Inbound:
    """The client's request as the ingress read it."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    client: str


@dataclass(slots=True)
class Outbound:
    """What goes back to the client: a whole body, or a stream of byte chunks."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    stream: AsyncGenerator[bytes, None] | None = None
    on_close: Callable[[], Awaitable[None]] | None = None


@dataclass(slots=True)
class Exchange:
    inbound: Inbound
    adapter: Adapter
    model: ModelCard
    body: dict[str, Any]
    stream: bool
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)
    scans: dict[Direction, ScanResult] = field(
        default_factory=lambda: dict.fromkeys(Direction, NOTHING_SCANNED)
    )
    decisions: dict[Direction, Decision] = field(
        default_factory=lambda: dict.fromkeys(Direction, ALLOW)
    )
    rewritten: bool = False

    def scan_context(self, direction: Direction) -> ScanContext:
        return ScanContext(direction, self.adapter.route, self.model, self.stream)

    def mark(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.timings[stage] = now - since
        return now

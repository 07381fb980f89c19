"""Per-request state. Everything a request learns lives here, never on shared objects."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from guard.detectors.base import Direction, ScanContext
from guard.detectors.runner import NOTHING_SCANNED, ScanResult
from guard.errors import ClientFacingError
from guard.policy.decision import ALLOW, Decision
from guard.policy.engine import Guardrails
from guard.policy.pseudonyms import Pseudonyms
from guard.protocols.base import Adapter
from guard.registry.cards import ModelCard
from guard.tenancy import Principal, Tenant
from guard.tenancy.gate import Held

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_STEPS_MAX = 256  # timed steps kept per exchange (a long stream scans many windows)
# An answer kept for the audit event beyond this is cut; its last chunks are kept
# apart, because that is where streams report token usage.
_TAIL_CHUNKS = 4


@dataclass(frozen=True, slots=True)
class Inbound:
    """The client's request as the ingress read it."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    client: str
    refused: ClientFacingError | None = None  # set when the ingress would not read it
    principal: Principal | None = None  # the key it was sent with (None: none)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


@dataclass(slots=True)
class Outbound:
    """What goes back to the client: a whole body, or a stream of byte chunks."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    stream: AsyncGenerator[bytes, None] | None = None
    on_close: Callable[[], Awaitable[None]] | None = None


@dataclass(slots=True)
class Capture:
    """The answer's bytes as the audit event will keep them, up to a limit."""

    limit: int
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    tail: list[bytes] = field(default_factory=list)
    truncated: bool = False

    def whole(self, body: bytes) -> None:
        """A whole answer, already in memory: kept as is, its texts are cut later."""
        self.chunks, self.size = [body], len(body)

    def add(self, chunk: bytes) -> None:
        if self.size + len(chunk) <= self.limit and not self.truncated:
            self.chunks.append(chunk)
            self.size += len(chunk)
            return
        self.truncated = True
        self.tail.append(chunk)
        if len(self.tail) > _TAIL_CHUNKS:
            del self.tail[0]


@dataclass(slots=True)
class Exchange:
    """One request from arrival to the last byte sent. The pipeline fills it in as it
    goes; once it is finished, the audit writer takes a snapshot of it."""

    inbound: Inbound
    adapter: Adapter
    capture: Capture
    started: float = field(default_factory=time.perf_counter)
    started_wall: float = field(default_factory=time.time)
    model: ModelCard | None = None
    tenant: Tenant | None = None
    guardrails: Guardrails | None = None  # the policy bundle this exchange started with
    # This exchange's pseudonyms (its conversation's, when the client names one):
    # never shared with another exchange.
    pseudonyms: Pseudonyms = field(default_factory=Pseudonyms)
    conversation: str | None = None
    body: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    trace_id: str = ""
    parent_span_id: str | None = None  # the client's span, when it sent a traceparent
    sampled: bool | None = None  # None until decided: the client's flag, else the ratio
    span_id: str = field(default_factory=lambda: secrets.token_hex(8))  # guard's root span
    upstream_span_id: str = field(default_factory=lambda: secrets.token_hex(8))
    steps: list[tuple[str, str, float, float]] = field(default_factory=list)
    scans: dict[Direction, ScanResult] = field(
        default_factory=lambda: dict.fromkeys(Direction, NOTHING_SCANNED)
    )
    decisions: dict[Direction, Decision] = field(
        default_factory=lambda: dict.fromkeys(Direction, ALLOW)
    )
    rules: list[tuple[Direction, str, str, str]] = field(default_factory=list)
    degraded: set[Direction] = field(default_factory=set)
    decided: bool = False
    policy_version: str | None = None
    rewritten: bool = False
    # perf_counter instants of the upstream call, and seconds spent guarding the output
    upstream_sent: float | None = None
    upstream_first_byte: float | None = None
    upstream_done: float | None = None
    guard_out: float = 0.0
    output_guarded: bool = False  # output detectors were asked about the answer
    output_complete: bool = False
    status: int = 0
    error_code: str | None = None
    ended: float = 0.0
    held: Held | None = None  # what the exchange took from its key's and tenant's limits

    def __post_init__(self) -> None:
        if self.inbound.principal is not None:
            self.tenant = self.inbound.principal.tenant
        if not self.trace_id:
            parent = parse_traceparent(self.inbound.header("traceparent"))
            if parent is None:
                self.trace_id = secrets.token_hex(16)
            else:
                self.trace_id, self.parent_span_id, self.sampled = parent

    def traceparent(self) -> str:
        """What guard sends upstream: the trace goes on, with the upstream call as parent."""
        return f"00-{self.trace_id}-{self.upstream_span_id}-{'01' if self.sampled else '00'}"

    @property
    def card(self) -> ModelCard:
        if self.model is None:  # pragma: no cover - the pipeline routes before it scans
            raise RuntimeError("the exchange has no model yet")
        return self.model

    @property
    def rails(self) -> Guardrails:
        if self.guardrails is None:  # pragma: no cover - set where the model is routed
            raise RuntimeError("the exchange has no policy bundle yet")
        return self.guardrails

    def scan_context(self, direction: Direction) -> ScanContext:
        return ScanContext(direction, self.adapter.route, self.card, self.stream, self.tenant)

    def add_scan(self, direction: Direction, scan: ScanResult) -> None:
        """Scans of one direction add up (a stream is scanned window by window)."""
        before = self.scans[direction]
        if len(self.steps) < _STEPS_MAX:
            base = self.started
            self.steps.extend(
                (name, direction.value, t0 - base, t1 - base) for name, t0, t1 in scan.timings
            )
        self.scans[direction] = ScanResult(
            findings=before.findings + scan.findings,
            failed=tuple(dict.fromkeys(before.failed + scan.failed)),
            scanned=True,
            detectors=tuple(dict.fromkeys(before.detectors + scan.detectors)),
        )

    def add_decision(self, direction: Direction, decision: Decision) -> None:
        self.decided = True
        for match in decision.hits():
            hit = (direction, match.rule_id, match.action.name.lower(), match.mode)
            if hit not in self.rules:
                self.rules.append(hit)
        if decision.degraded:
            self.degraded.add(direction)
        if decision.action > self.decisions[direction].action:
            self.decisions[direction] = decision

    def finish(self, status: int, error_code: str | None = None) -> None:
        self.status = status
        self.error_code = error_code
        self.ended = time.perf_counter()


def parse_traceparent(traceparent: str | None) -> tuple[str, str, bool] | None:
    """The W3C trace context the client sent (trace id, its span id, sampled), if valid."""
    if not traceparent:
        return None
    match = _TRACEPARENT.match(traceparent.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags = match.groups()
    if version == "ff" or trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return trace_id, span_id, bool(int(flags, 16) & 1)

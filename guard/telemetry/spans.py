"""An exchange's trace, built from its record in the audit writer, off the request path.

The request path only notes perf_counter instants (detectors, policy, the upstream
call) and the span ids it sent upstream in ``traceparent``; here they become spans:

    guard {route}                  server; the client's span is its parent
    ├── guard.ingress              arrival until the upstream call (parsing, input guards)
    │   ├── guard.detector NAME    one per detector and scan (guard.direction says which)
    │   └── guard.policy DIRECTION
    ├── guard.upstream             client; the model server's spans are its children
    ├── guard.stream               forwarding a streamed answer, first byte to last
    │   └── guard.detector / guard.policy (output windows)
    └── guard.audit.enqueue        the exchange's snapshot for the audit trail

Attributes follow the OpenTelemetry HTTP and GenAI conventions where they apply.
No attribute holds request or response text.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import msgspec

from guard.audit.events import AuditEvent, ExchangeRecord

_OPERATIONS = {
    "/v1/chat/completions": "chat",
    "/api/chat": "chat",
    "/v1/completions": "text_completion",
    "/api/generate": "text_completion",
    "/v1/embeddings": "embeddings",
    "/api/embed": "embeddings",
}


class SpanRow(msgspec.Struct, frozen=True, array_like=True):
    """One span, as the spans table and the OTLP exporter take it."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    event_id: str | None
    name: str
    kind: str  # server | client | internal
    start_time: datetime
    end_time: datetime
    duration_ms: float
    status: str  # ok | error | unset
    attributes: dict[str, Any]


def spans_of(rec: ExchangeRecord, event: AuditEvent) -> list[SpanRow]:
    build = _Builder(rec, event)
    root = build.root()
    rows = [root]
    ingress_end = rec.guard_in
    rows.append(build.child("guard.ingress", 0.0, ingress_end))
    streamed = rec.stream and rec.ttfb is not None
    stream_row = None
    if rec.ttfb is not None:
        rows.append(build.upstream())
        if streamed:
            stream_row = build.child("guard.stream", rec.guard_in + rec.ttfb, rec.total)
            rows.append(stream_row)
    for name, direction, start, end in rec.steps:
        if start < ingress_end:
            parent = rows[1].span_id
        else:  # output guarding: inside the stream's forwarding, or after a whole answer
            parent = stream_row.span_id if stream_row else rec.span_id
        rows.append(build.step(name, direction, start, end, parent))
    rows.append(build.child("guard.audit.enqueue", rec.total, rec.total + rec.enqueue))
    return rows


class _Builder:
    def __init__(self, rec: ExchangeRecord, event: AuditEvent) -> None:
        self.rec = rec
        self.event = event

    def _row(
        self,
        name: str,
        start: float,
        end: float,
        *,
        parent: str | None,
        span_id: str | None = None,
        kind: str = "internal",
        status: str = "unset",
        attributes: dict[str, Any] | None = None,
    ) -> SpanRow:
        rec = self.rec
        end = max(end, start)
        return SpanRow(
            trace_id=rec.trace_id,
            span_id=span_id or secrets.token_hex(8),
            parent_span_id=parent,
            event_id=self.event.id,
            name=name,
            kind=kind,
            start_time=_at(rec.started_wall + start),
            end_time=_at(rec.started_wall + end),
            duration_ms=round((end - start) * 1000, 3),
            status=status,
            attributes=attributes or {},
        )

    def root(self) -> SpanRow:
        rec, ev = self.rec, self.event
        attrs: dict[str, Any] = {
            "http.request.method": rec.method,
            "http.route": rec.route or rec.path,
            "http.response.status_code": rec.status,
            "guard.event_id": ev.id,
            "guard.stream": rec.stream,
        }
        optional = {
            "gen_ai.operation.name": _OPERATIONS.get(rec.route),
            "gen_ai.request.model": ev.model,
            "gen_ai.response.model": ev.upstream_model,
            "gen_ai.usage.input_tokens": ev.prompt_tokens,
            "gen_ai.usage.output_tokens": ev.completion_tokens,
            "guard.decision": ev.decision,
            "guard.policy_version": ev.policy_version,
            "guard.licence.id": ev.licence_id,
            "guard.input_scan": ev.input_scan,
            "guard.output_scan": ev.output_scan,
            "error.type": rec.error_code,
        }
        attrs.update({k: v for k, v in optional.items() if v is not None})
        status = "error" if rec.status >= 500 else "ok"
        return self._row(
            f"guard {rec.route or rec.path}",
            0.0,
            rec.total,
            parent=rec.parent_span_id,
            span_id=rec.span_id,
            kind="server",
            status=status,
            attributes=attrs,
        )

    def child(self, name: str, start: float, end: float) -> SpanRow:
        return self._row(name, start, end, parent=self.rec.span_id)

    def upstream(self) -> SpanRow:
        rec, ev = self.rec, self.event
        assert rec.ttfb is not None  # noqa: S101  # only called once the upstream answered
        total = rec.upstream_total if rec.upstream_total is not None else rec.total - rec.guard_in
        attrs: dict[str, Any] = {
            "guard.upstream": ev.upstream or "",
            "guard.ttfb_ms": round(rec.ttfb * 1000, 3),
        }
        if ev.upstream_model:
            attrs["gen_ai.request.model"] = ev.upstream_model
        return self._row(
            "guard.upstream",
            rec.guard_in,
            rec.guard_in + total,
            parent=rec.span_id,
            span_id=rec.upstream_span_id,
            kind="client",
            attributes=attrs,
        )

    def step(self, name: str, direction: str, start: float, end: float, parent: str) -> SpanRow:
        kind, _, detector = name.partition(":")
        if kind == "detector":
            title, attrs = f"guard.detector {detector}", {"guard.detector": detector}
        else:
            title, attrs = f"guard.policy {direction}", {}
        attrs["guard.direction"] = direction
        return self._row(title, start, end, parent=parent, attributes=attrs)


def _at(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)

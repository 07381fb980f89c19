"""Exchanges' traces to an OTLP endpoint (collector, Jaeger, Tempo), from the audit writer.

The spans are built there from each exchange's record (guard.telemetry.spans) and
handed to the OpenTelemetry SDK's BatchSpanProcessor, whose own thread sends them
with the OTLP/HTTP exporter. Nothing here runs in the process that serves requests;
a collector that is down costs a failure count (``guard_spans_export_failures_total``)
and a line in the writer's log, never a request's time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from guard import __version__
from guard.settings import TraceSettings
from guard.telemetry.spans import SpanRow

_KINDS = {"server": SpanKind.SERVER, "client": SpanKind.CLIENT, "internal": SpanKind.INTERNAL}
_STATUS = {"ok": StatusCode.OK, "error": StatusCode.ERROR, "unset": StatusCode.UNSET}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_SCOPE = InstrumentationScope("guard", __version__)
_FAILURE_LOG_EVERY = 60.0  # seconds between log lines about a collector that is down
log = logging.getLogger(__name__)


class ExportCounts:
    """Spans sent and spans lost, read by the writer's status (one thread writes each)."""

    def __init__(self) -> None:
        self.exported = 0
        self.failed = 0


class _Counting(SpanExporter):
    def __init__(self, inner: SpanExporter, counts: ExportCounts) -> None:
        self._inner = inner
        self._counts = counts
        self._logged = -_FAILURE_LOG_EVERY

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception:  # noqa: BLE001  # an exporter bug must not kill the SDK's thread
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self._counts.exported += len(spans)
        else:
            self._counts.failed += len(spans)
            now = time.monotonic()
            if now - self._logged >= _FAILURE_LOG_EVERY:
                self._logged = now
                log.warning(
                    "tracing: the OTLP endpoint is not taking spans; %d lost so far",
                    self._counts.failed,
                )
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class OtlpSpans:
    def __init__(self, settings: TraceSettings, exporter: SpanExporter | None = None) -> None:
        self.counts = ExportCounts()
        endpoint = str(settings.otlp_endpoint).rstrip("/") + "/v1/traces"
        inner = exporter or OTLPSpanExporter(endpoint=endpoint, timeout=5)
        # The exporter logs every retry and every failed batch: with a collector down,
        # lines every second. Failures are counted instead, and logged once a minute.
        logging.getLogger(OTLPSpanExporter.__module__).setLevel(logging.CRITICAL)
        self._processor = BatchSpanProcessor(
            _Counting(inner, self.counts), max_queue_size=8192, schedule_delay_millis=500
        )
        self._resource = Resource.create(
            {"service.name": settings.service_name, "service.version": __version__}
        )

    def export(self, rows: Sequence[SpanRow]) -> None:
        """Queue the spans; the SDK's thread sends them in batches."""
        for row in rows:
            self._processor.on_end(self._readable(row))

    def _readable(self, row: SpanRow) -> ReadableSpan:
        trace_id = int(row.trace_id, 16)
        parent = None
        if row.parent_span_id:
            parent = SpanContext(trace_id, int(row.parent_span_id, 16), False, _SAMPLED)
        start = _ns(row.start_time.timestamp())
        events: list[Event] = []
        ttfb = row.attributes.get("guard.ttfb_ms")
        if isinstance(ttfb, int | float):  # the upstream's first byte, as a span event
            events.append(Event("guard.first_byte", timestamp=start + int(ttfb * 1_000_000)))
        return ReadableSpan(
            name=row.name,
            context=SpanContext(trace_id, int(row.span_id, 16), False, _SAMPLED),
            parent=parent,
            resource=self._resource,
            attributes=_attributes(row.attributes),
            events=events,
            kind=_KINDS.get(row.kind, SpanKind.INTERNAL),
            status=Status(_STATUS.get(row.status, StatusCode.UNSET)),
            start_time=start,
            end_time=_ns(row.end_time.timestamp()),
            instrumentation_scope=_SCOPE,
        )

    def close(self) -> None:
        """Send what is queued (the last batch is not lost), then stop the thread."""
        self._processor.force_flush(5_000)
        self._processor.shutdown()  # type: ignore[no-untyped-call]


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _attributes(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if isinstance(v, str | bool | int | float)}

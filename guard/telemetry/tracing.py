"""The audit writer's side of tracing: spans for each sampled exchange it records, to
the spans table (with the exchange's event) and to an OTLP endpoint, as settings say."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from guard.audit.events import AuditEvent, ExchangeRecord
from guard.settings import TraceSettings
from guard.telemetry.spans import SpanRow, spans_of

if TYPE_CHECKING:
    from guard.telemetry.otlp import OtlpSpans

log = logging.getLogger(__name__)


class Tracing:
    def __init__(self, settings: TraceSettings | None = None) -> None:
        exporters = set(settings.exporters) if settings else set()
        self._database = "database" in exporters
        self._otlp: OtlpSpans | None = None
        self.build_failures = 0
        if settings and "otlp" in exporters:
            from guard.telemetry.otlp import OtlpSpans  # noqa: PLC0415  # the SDK, if asked for

            self._otlp = OtlpSpans(settings)

    @property
    def enabled(self) -> bool:
        return self._database or self._otlp is not None

    def spans(self, batch: Sequence[object], events: Sequence[AuditEvent]) -> list[SpanRow]:
        """The batch's spans: sent to OTLP now, returned for the database write."""
        if not self.enabled:
            return []
        rows: list[SpanRow] = []
        for item, event in zip(batch, events, strict=True):
            if isinstance(item, ExchangeRecord) and item.sampled:
                try:
                    rows.extend(spans_of(item, event))
                except Exception as exc:  # noqa: BLE001  # a trace never costs an event
                    self.build_failures += 1
                    log.warning("tracing: spans of %s not built (%s)", event.id, type(exc).__name__)
        if self._otlp is not None and rows:
            self._otlp.export(rows)
        return rows if self._database else []

    def otlp_counts(self) -> tuple[int, int]:
        if self._otlp is None:
            return 0, 0
        return self._otlp.counts.exported, self._otlp.counts.failed

    def close(self) -> None:
        if self._otlp is not None:
            self._otlp.close()

"""The audit trail: events (events.py), the recorder (recorder.py, spool.py), hash
chains (chain.py) and the compliance queries (queries.py)."""

from __future__ import annotations

import logging

from guard.audit.recorder import AuditRecorder
from guard.db.base import describe, make_engine
from guard.db.migrate import ensure_current
from guard.db.repository import AuditRepository
from guard.pipeline.context import Exchange
from guard.settings import AuditSettings

log = logging.getLogger(__name__)


class NoAudit:
    """``audit.enabled: false``: nothing is recorded (benchmarks, never compliance)."""

    def admit(self) -> None:
        pass

    def record(self, ex: Exchange) -> None:
        pass


def open_recorder(settings: AuditSettings) -> AuditRecorder:
    """Check the schema (or migrate, if allowed), then start the writer thread."""
    engine = make_engine(settings.database_url)
    ensure_current(engine, auto_migrate=settings.auto_migrate)
    recorder = AuditRecorder(settings, AuditRepository(engine))
    recorder.start()
    log.info(
        "audit: recording to %s (chain %s, texts: %s)",
        describe(settings.database_url),
        recorder.chain.id,
        settings.store_text,
    )
    return recorder


__all__ = ["AuditRecorder", "NoAudit", "open_recorder"]

"""The recorder: events are queued in memory and written in batches by one thread.

It runs in guard's audit writer process (guard.audit.writer), fed through a pipe;
tools and benchmarks also run it in-process. Its writer thread builds each event,
seals it into this process's hash chain, and writes batches to the database;
when the database is unreachable it appends them to the spool (fsynced) and
replays the spool, in order, once the database answers again. If even the spool
cannot be written, ``audit.on_spool_failure`` decides: ``fail_closed`` refuses new
requests until events can be kept again; ``fail_open`` serves on and counts every
event it had to drop.

On shutdown the thread drains the queue into the database, or into the spool, for
up to ``audit.drain_timeout`` seconds. A spool left by a process that died is
replayed by the next recorder that starts on the same spool directory.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from guard.audit.chain import Sealer
from guard.audit.events import (
    AuditEvent,
    ExchangeRecord,
    StoreText,
    bare_event,
    from_record,
    new_event_id,
)
from guard.audit.spool import Spool, dead_letter
from guard.db.repository import AuditRepository, ChainInfo, DatabaseRefused
from guard.settings import AuditSettings
from guard.telemetry.tracing import Tracing

if TYPE_CHECKING:
    from guard.telemetry.spans import SpanRow

log = logging.getLogger(__name__)
_LOSS_LOG_EVERY = 10.0  # seconds between log lines about lost events


@dataclass(slots=True)
class RecorderStats:
    written: int = 0
    spooled: int = 0
    replayed: int = 0
    lost: int = 0
    dead_letters: int = 0
    spans_written: int = 0  # into the spans table, with their events
    spans_unwritten: int = 0  # their events went to the spool, or the database refused


def chain_key(settings: AuditSettings) -> bytes | None:
    return os.environ[settings.chain_key_env].encode() if settings.chain_key_env else None


def new_chain(settings: AuditSettings, role: str = "") -> ChainInfo:
    """A chain for one recording process, named after the guard instance and process."""
    return ChainInfo(
        id=new_event_id(),
        instance=f"{settings.instance or socket.gethostname()}:{os.getpid()}{role}",
        started_at=datetime.now(UTC),
        keyed=settings.chain_key_env is not None,
    )


Item = ExchangeRecord | AuditEvent


class AuditRecorder:
    def __init__(
        self,
        settings: AuditSettings,
        repo: AuditRepository,
        chain: ChainInfo | None = None,
        traces: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.traces = traces or Tracing()
        key = chain_key(settings)
        self.chain = chain or new_chain(settings)
        self.stats = RecorderStats()
        self.broken = False  # events can be neither written nor spooled right now
        self.db_up = True
        self._store: StoreText = settings.store_text
        self._sealer = Sealer(self.chain.id, key)
        self._spool = Spool(settings.spool_dir, self.chain, settings.spool_max_bytes)
        self._orphans: list[Spool] = []
        self._queue: deque[Item] = deque()
        self._held: list[AuditEvent] = []
        self._inflight = 0  # taken from the queue, not yet written or spooled
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._retry_at = 0.0
        self._last_loss_log = 0.0
        self._thread = threading.Thread(target=self._run, name="guard-audit", daemon=True)

    # -- feeding it -------------------------------------------------------------------

    def record(self, item: Item) -> None:
        if len(self._queue) >= self.settings.queue_max:
            self._lose(1)
            return
        self._queue.append(item)
        if len(self._queue) >= self.settings.batch_size:
            self._wake.set()

    @property
    def queued(self) -> int:
        return len(self._queue) + len(self._held) + self._inflight

    @property
    def spooled_bytes(self) -> int:
        return self._spool.size + sum(s.size for s in self._orphans)

    def start(self) -> None:
        self._orphans = list(Spool.orphans(self.settings.spool_dir, self.settings.spool_max_bytes))
        if self._orphans:
            log.info("audit: replaying %d spool(s) left by earlier processes", len(self._orphans))
        self._thread.start()

    def close(self) -> None:
        """Drain: write or spool everything queued, then stop the thread."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(self.settings.drain_timeout + 5)

    @property
    def idle(self) -> bool:
        return not self.queued and not self._spool.pending and not self._orphans

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is queued, held or spooled (for tests and tools)."""
        deadline = time.monotonic() + timeout
        while self.queued or self._spool.pending or any(s.pending for s in self._orphans):
            if time.monotonic() > deadline:
                return False
            self._wake.set()
            time.sleep(0.005)
        return True

    # -- the writer thread ---------------------------------------------------------

    def _run(self) -> None:
        deadline: float | None = None
        while True:
            try:
                self._cycle()
            except Exception:  # the writer must outlive anything one batch does
                log.exception("audit: writer cycle failed")
            if self._stopping.is_set():
                deadline = deadline or time.monotonic() + self.settings.drain_timeout
                # Spooled events are safe on disk: with the database down, stop anyway.
                settled = not self.queued and (not self._replay_pending() or not self.db_up)
                if settled or time.monotonic() > deadline:
                    break
            if not self._queue or self.broken:
                self._wake.wait(self._pause())
                self._wake.clear()
        self._finish()

    def _pause(self) -> float:
        if self.broken or not self.db_up:
            return min(self.settings.retry_interval, self.settings.flush_interval * 4)
        return self.settings.flush_interval

    def _cycle(self) -> None:
        # Oldest first: the spool, then what could not be spooled, then the queue.
        if self._replay_pending() and self._db_worth_trying():
            self._replay()
        if self._held:
            if not self._keep(self._held):
                return
            self._held = []
        while self._queue:
            batch = self._take()
            sealed = [self._sealer.seal(self._build(item)) for item in batch]
            kept = self._keep(sealed, self.traces.spans(batch, sealed))
            self._held, self._inflight = ([] if kept else sealed), 0
            if not kept:
                return

    def _take(self) -> list[Item]:
        queue = self._queue
        # Counted as in flight before they leave the queue, so flush() never sees a gap.
        self._inflight = min(len(queue), self.settings.batch_size)
        return [queue.popleft() for _ in range(self._inflight)]

    def _build(self, item: Item) -> AuditEvent:
        if isinstance(item, AuditEvent):
            return item
        try:
            return from_record(item, self._store)
        except Exception as exc:  # noqa: BLE001  # an event is never dropped for a bug
            # The type only: a message or traceback may quote the content.
            log.error("audit: building an event failed (%s)", _kind(exc))  # noqa: TRY400
            return bare_event(item)

    def _keep(self, sealed: list[AuditEvent], spans: Sequence[SpanRow] = ()) -> bool:
        """Into the database when it is up and nothing waits before them; else the spool.
        Spans go in with their events, or not at all (the spool keeps events only)."""
        direct = self._db_worth_trying() and not self._replay_pending()
        refused = self.stats.dead_letters
        if direct and self._write(sealed, {self.chain.id: self.chain}, fresh=True, spans=spans):
            self.stats.written += len(sealed) - (self.stats.dead_letters - refused)
            self.broken = False
            return True
        self.stats.spans_unwritten += len(spans)
        try:
            self._spool.append(sealed)
        except OSError as exc:
            if not self.broken:
                log.error(  # noqa: TRY400  # the reason, not a traceback
                    "audit: cannot spool events (%s); %s", exc.strerror or exc, self._mode()
                )
            self.broken = True
            return False
        self.stats.spooled += len(sealed)
        self.broken = False
        return True

    def _write(
        self,
        events: list[AuditEvent],
        chains: dict[str, ChainInfo],
        *,
        fresh: bool = False,
        spans: Sequence[SpanRow] = (),
    ) -> bool:
        try:
            self.repo.write(events, chains, fresh=fresh, spans=spans)
        except DatabaseRefused as exc:
            self.stats.spans_unwritten += len(spans)  # the events go one by one, bare
            return self._write_each(events, chains, exc)
        except Exception as exc:  # noqa: BLE001  # unreachable or unknown: keep them, retry
            self._db_down(exc)
            return False
        self.stats.spans_written += len(spans)
        return True

    def _write_each(
        self, events: list[AuditEvent], chains: dict[str, ChainInfo], first: Exception
    ) -> bool:
        """A batch the database refused for its content: keep what it accepts, set
        aside what it does not, so one bad event never stalls the trail. False if the
        database went away meanwhile (the whole batch is then spooled; what was written
        is skipped on replay)."""
        log.error("audit: the database refused a batch (%s); writing one by one", _kind(first))
        for event in events:
            try:
                self.repo.write([event], chains)
            except DatabaseRefused as exc:
                self._dead_letter(event, exc)
            except Exception as exc:  # noqa: BLE001
                self._db_down(exc)
                return False
        return True

    def _dead_letter(self, event: AuditEvent, exc: Exception) -> None:
        self.stats.dead_letters += 1
        log.error("audit: event %s refused by the database (%s)", event.id, _kind(exc))
        dead_letter(self.settings.spool_dir / f"{self.chain.id}.dead-letter", event)

    def _db_down(self, exc: Exception) -> None:
        if self.db_up:
            log.warning("audit: database unavailable (%s); spooling events", _kind(exc))
        self.db_up = False
        self._retry_at = time.monotonic() + self.settings.retry_interval

    def _db_worth_trying(self) -> bool:
        return self.db_up or time.monotonic() >= self._retry_at

    def _replay_pending(self) -> bool:
        return self._spool.pending or bool(self._orphans)

    def _replay(self) -> None:
        for spool in [*self._orphans, self._spool]:
            if not self._replay_one(spool):
                return
            if spool is not self._spool:
                spool.remove()
                self._orphans.remove(spool)
        if not self.db_up:
            log.info("audit: database back; spool replayed")
        self.db_up = True

    def _replay_one(self, spool: Spool) -> bool:
        while spool.pending:
            events, offset = spool.read(self.settings.batch_size)
            if not events:
                log.warning("audit: %s ends in an unfinished write; dropped", spool.path.name)
                return True
            refused = self.stats.dead_letters
            if not self._write(events, {spool.chain.id: spool.chain}):
                return False
            spool.advance(offset)
            self.stats.replayed += len(events) - (self.stats.dead_letters - refused)
        return True

    def _finish(self) -> None:
        lost = self.queued
        if lost:
            self._lose(lost)
        if self._spool.pending:
            log.warning("audit: %d bytes stay spooled for the next start", self._spool.size)
        self._spool.close()
        for spool in self._orphans:
            spool.close()
        self.traces.close()
        self.repo.engine.dispose()

    def _lose(self, count: int) -> None:
        self.stats.lost += count
        now = time.monotonic()
        if now - self._last_loss_log >= _LOSS_LOG_EVERY:
            self._last_loss_log = now
            log.error("audit: %d event(s) lost so far (nothing could keep them)", self.stats.lost)

    def _mode(self) -> str:
        if self.settings.on_spool_failure == "fail_closed":
            return "refusing requests until events can be kept (fail_closed)"
        return "serving on and counting lost events (fail_open)"


def _kind(exc: Exception) -> str:
    """The error's type, never its message: a message may quote a value."""
    orig = getattr(exc, "orig", None)
    return type(orig).__name__ if orig is not None else type(exc).__name__


def record_admin_action(
    repo: AuditRepository,
    settings: AuditSettings,
    action: str,
    detail: dict[str, object],
    *,
    method: str = "CLI",
    client: str = "local",
    key_id: str | None = None,
) -> AuditEvent:
    """An administrative action (a purge, a key revoked …) as an audit event in a chain
    of its own, written at once: if the database is down, the action is not reported
    done. ``key_id``: the admin key that acted (admin API); the CLI acts as ``local``."""
    key = os.environ[settings.chain_key_env].encode() if settings.chain_key_env else None
    now = datetime.now(UTC)
    chain = ChainInfo(
        new_event_id(), f"{settings.instance}:{os.getpid()}:admin", now, key is not None
    )
    event = AuditEvent(
        id=new_event_id(),
        kind="admin",
        started_at=now,
        ended_at=now,
        key_id=key_id,
        client_address=client[:64],
        method=method,
        route=action,
        status=0,
        total_ms=0.0,
        trace_id=new_event_id().replace("-", ""),
        detail=detail,
    )
    sealed = Sealer(chain.id, chain_key(settings)).seal(event)
    repo.write([sealed], {chain.id: chain})
    return sealed

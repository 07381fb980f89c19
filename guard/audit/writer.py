"""The audit writer process: the recorder runs beside guard, not inside it.

Building, sealing and writing an event costs tens of microseconds of Python; in
guard's own process that time competes with the request loop for the interpreter
lock and shows up in every request's latency. So each guard process starts one
writer process and hands it finished exchanges through a pipe:

    request loop ──record()──▶ deque ──sender thread──▶ pipe ──▶ writer process
                  (a snapshot:                (msgpack frames)     (AuditRecorder:
                   plain values)                                    database | spool)

The writer reports its state (database up, spool writable, counts) in shared
memory, which ``admit()`` and ``/readyz`` read. It ignores SIGINT and SIGTERM and
ends when the pipe closes: after guard's shutdown has sent everything, or when
guard died (even by SIGKILL), so what reached it is still written or spooled.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

import msgspec

from guard.audit.events import AuditEvent, ExchangeRecord, record_of
from guard.audit.recorder import AuditRecorder, RecorderStats, new_chain
from guard.db.base import describe, make_engine
from guard.db.migrate import ensure_current
from guard.db.repository import AuditRepository, ChainInfo
from guard.errors import AuditUnavailable
from guard.pipeline.context import Exchange
from guard.settings import LOG_FORMAT, AuditSettings, TraceSettings
from guard.telemetry.tracing import Tracing

log = logging.getLogger(__name__)
_FRAME_MAX = 512  # records per pipe message
_LOSS_LOG_EVERY = 10.0  # seconds between log lines about lost events


class _Frame(msgspec.Struct, array_like=True):
    """One pipe message: exchanges, and the rare event guard builds itself (a policy load)."""

    records: list[ExchangeRecord]
    events: list[AuditEvent]


_FrameDecoder = msgspec.msgpack.Decoder(_Frame)


class Slot(enum.IntEnum):
    """What the writer publishes, one int64 each."""

    ACCEPTED = 0
    QUEUED = 1
    DB_UP = 2
    BROKEN = 3
    WRITTEN = 4
    SPOOLED = 5
    REPLAYED = 6
    LOST = 7
    DEAD_LETTERS = 8
    SPOOLED_BYTES = 9
    IDLE = 10
    SPANS_DATABASE = 11
    SPANS_DATABASE_FAILED = 12
    SPANS_OTLP = 13
    SPANS_OTLP_FAILED = 14


class NoAudit:
    """``audit.enabled: false``: nothing is recorded (benchmarks, never compliance)."""

    def admit(self) -> None:
        pass

    def record(self, ex: Exchange) -> None:
        pass

    def note(self, event: AuditEvent) -> None:
        pass


class AuditWriter:
    """guard's side: ``admit`` and ``record`` on the request path, the sender thread,
    and the writer process's lifecycle."""

    def __init__(self, settings: AuditSettings, traces: TraceSettings | None = None) -> None:
        self.settings = settings
        self.traces = traces
        self.repo = AuditRepository(make_engine(settings.database_url))  # reads (admin API)
        self.chain = new_chain(settings)
        # Forked from a server process that imported this module once (and holds no
        # thread or socket of guard's): a writer starts in milliseconds, where a
        # spawned one imported SQLAlchemy, pydantic and OpenTelemetry afresh each
        # time, and a guard stopped before that was done waited for it (0.6 to 1.7 s
        # of every stop, measured).
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload([__name__])
        self._status: SynchronizedArray[int] = self._ctx.Array("q", len(Slot), lock=False)
        self._queue: deque[ExchangeRecord | AuditEvent] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._sent = 0
        self._lost = 0
        self._last_loss_log = 0.0
        self._process: Any = None
        self._conn: Connection | None = None
        self._sender = threading.Thread(
            target=self._send_loop, name="guard-audit-send", daemon=True
        )

    # -- the request path ---------------------------------------------------------------

    def admit(self) -> None:
        if self.settings.on_spool_failure != "fail_closed":
            return
        if self.broken or len(self._queue) >= self.settings.queue_max:
            raise AuditUnavailable(
                "guard cannot record this exchange right now (audit database and spool "
                "unavailable), so it does not serve it"
            )

    def record(self, ex: Exchange) -> None:
        if len(self._queue) >= self.settings.queue_max:
            self._lost += 1
            now = time.monotonic()
            if now - self._last_loss_log >= _LOSS_LOG_EVERY:
                self._last_loss_log = now
                log.error("audit: the writer is not keeping up; %d event(s) lost", self._lost)
            return
        started = time.perf_counter()
        record = record_of(ex)
        record.enqueue = time.perf_counter() - started
        self._queue.append(record)
        if len(self._queue) >= _FRAME_MAX:
            self._wake.set()

    def note(self, event: AuditEvent) -> None:
        """An event guard built itself (a policy load): sealed and kept like exchanges."""
        self._queue.append(event)
        self._wake.set()

    # -- state ---------------------------------------------------------------------------

    def _slot(self, slot: Slot) -> int:
        return int(self._status[slot])

    @property
    def broken(self) -> bool:
        return bool(self._slot(Slot.BROKEN))

    @property
    def db_up(self) -> bool:
        return bool(self._slot(Slot.DB_UP))

    @property
    def queued(self) -> int:
        return len(self._queue) + (self._sent - self._slot(Slot.ACCEPTED)) + self._slot(Slot.QUEUED)

    @property
    def spooled_bytes(self) -> int:
        return self._slot(Slot.SPOOLED_BYTES)

    @property
    def stats(self) -> RecorderStats:
        return RecorderStats(
            written=self._slot(Slot.WRITTEN),
            spooled=self._slot(Slot.SPOOLED),
            replayed=self._slot(Slot.REPLAYED),
            lost=self._slot(Slot.LOST) + self._lost,
            dead_letters=self._slot(Slot.DEAD_LETTERS),
        )

    def telemetry_state(self) -> dict[str, int]:
        """For /metrics: queue, spool, losses, and the spans exported."""
        slot = self._slot
        return {
            "queued": self.queued,
            "spooled_bytes": self.spooled_bytes,
            "lost": self.stats.lost,
            "written": self.stats.written,
            "spans_database": slot(Slot.SPANS_DATABASE),
            "spans_database_failed": slot(Slot.SPANS_DATABASE_FAILED),
            "spans_otlp": slot(Slot.SPANS_OTLP),
            "spans_otlp_failed": slot(Slot.SPANS_OTLP_FAILED),
        }

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything recorded so far is in the database (tests and tools)."""
        deadline = time.monotonic() + timeout
        while self._queue or self._sent != self._slot(Slot.ACCEPTED) or not self._slot(Slot.IDLE):
            if time.monotonic() > deadline:
                return False
            self._wake.set()
            time.sleep(0.005)
        return True

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._spawn()
        self._sender.start()

    def _spawn(self) -> None:
        reader, writer = self._ctx.Pipe(duplex=False)
        self._status[Slot.ACCEPTED] = 0
        self._status[Slot.DB_UP] = 1
        self._sent = 0
        level = logging.getLogger().getEffectiveLevel()
        traces = self.traces.model_dump(mode="json") if self.traces else None
        settings = {
            "audit": self.settings.model_dump(mode="json"),
            "traces": traces,
            # guard's environment as it is now (the chain key, the exporter's
            # variables), not as it was when the fork server started
            "environ": dict(os.environ),
        }
        args = (settings, self.chain, reader, self._status, level)
        self._process = self._ctx.Process(target=_writer_main, args=args, name="guard-audit")
        self._process.start()
        reader.close()
        self._conn = writer

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Send what is queued, close the pipe, wait for the writer to drain and exit."""
        self._stopping = True
        self._wake.set()
        self._sender.join(self.settings.drain_timeout + 5)
        if self._conn is not None:
            self._conn.close()
        if self._process is not None:
            self._process.join(self.settings.drain_timeout + 10)
        self.repo.engine.dispose()

    def _send_loop(self) -> None:
        while True:
            self._wake.wait(self.settings.flush_interval)
            self._wake.clear()
            if not self._process.is_alive() and not self._stopping:
                self._respawn()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), _FRAME_MAX))]
                self._send(batch)
            if self._stopping and not self._queue:
                return

    def _send(self, batch: list[ExchangeRecord | AuditEvent]) -> None:
        assert self._conn is not None  # noqa: S101  # set before the sender starts
        records = [item for item in batch if isinstance(item, ExchangeRecord)]
        events = [item for item in batch if isinstance(item, AuditEvent)]
        frame = msgspec.msgpack.encode(_Frame(records, events))
        try:
            self._conn.send_bytes(frame)
        except OSError:
            self._lost += len(batch)
            self._respawn()
            return
        self._sent += len(batch)

    def _respawn(self) -> None:
        """The writer died (it should not): what it had not taken is gone with it, and
        counted; a new writer starts a new chain. Spooled events stay on disk for it."""
        log.error("audit: the writer process died; starting a new one")
        self._lost += max(0, self._sent - self._slot(Slot.ACCEPTED))
        self._lost += self._slot(Slot.QUEUED)
        if self._conn is not None:
            self._conn.close()
        self._status[Slot.QUEUED] = 0
        self.chain = new_chain(self.settings)
        self._spawn()


def _writer_main(
    settings_data: dict[str, Any], chain: ChainInfo, conn: Connection, status: Any, log_level: int
) -> None:
    """The writer process: read frames until the pipe closes, then drain and exit."""
    os.environ.clear()
    os.environ.update(settings_data["environ"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    settings = AuditSettings.model_validate(settings_data["audit"])
    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    traces_data = settings_data["traces"]
    traces = Tracing(TraceSettings.model_validate(traces_data) if traces_data else None)
    repo = AuditRepository(make_engine(settings.database_url))
    recorder = AuditRecorder(settings, repo, chain, traces)
    recorder.start()
    while True:
        try:
            if conn.poll(0.02):
                frame = _FrameDecoder.decode(conn.recv_bytes())
                status[Slot.IDLE] = 0  # before ACCEPTED moves, so flush() never sees it stale
                items: list[ExchangeRecord | AuditEvent] = [*frame.records, *frame.events]
                for item in items:
                    recorder.record(item)
                    status[Slot.ACCEPTED] += 1
        except EOFError:
            break
        _publish(recorder, status)
    recorder.close()
    _publish(recorder, status)


def _publish(recorder: AuditRecorder, status: Any) -> None:
    stats = recorder.stats
    otlp_sent, otlp_failed = recorder.traces.otlp_counts()
    values = {
        Slot.QUEUED: recorder.queued,
        Slot.DB_UP: recorder.db_up,
        Slot.BROKEN: recorder.broken,
        Slot.WRITTEN: stats.written,
        Slot.SPOOLED: stats.spooled,
        Slot.REPLAYED: stats.replayed,
        Slot.LOST: stats.lost,
        Slot.DEAD_LETTERS: stats.dead_letters,
        Slot.SPOOLED_BYTES: recorder.spooled_bytes,
        Slot.IDLE: recorder.idle,
        Slot.SPANS_DATABASE: stats.spans_written,
        Slot.SPANS_DATABASE_FAILED: stats.spans_unwritten,
        Slot.SPANS_OTLP: otlp_sent,
        Slot.SPANS_OTLP_FAILED: otlp_failed,
    }
    for slot, value in values.items():
        status[slot] = int(value)


def open_writer(settings: AuditSettings, traces: TraceSettings | None = None) -> AuditWriter:
    """Check the schema (or migrate, if allowed), then start the writer process."""
    engine = make_engine(settings.database_url)
    try:
        ensure_current(engine, auto_migrate=settings.auto_migrate)
    finally:
        engine.dispose()
    writer = AuditWriter(settings, traces)
    writer.start()
    log.info(
        "audit: recording to %s (chain %s, texts: %s)",
        describe(settings.database_url),
        writer.chain.id,
        settings.store_text,
    )
    return writer

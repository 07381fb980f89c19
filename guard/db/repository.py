"""All database access goes through here: the recorder's writes, the compliance
queries' reads, retention. Nothing else opens a connection."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from typing import Any

import msgspec
import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from guard.audit.events import AuditEvent
from guard.db import models

_EVENT_COLUMNS = [c.name for c in models.events.columns]


@dataclass(frozen=True, slots=True)
class ChainInfo:
    id: str
    instance: str
    started_at: datetime
    keyed: bool
    head_seq: int = 0
    head_hash: str = ""
    anchor_seq: int = 0
    anchor_hash: str | None = None


class DatabaseUnavailable(Exception):
    """The database could not be reached; what was being written was not."""


class DatabaseRefused(Exception):
    """The database refused what was written for its content; nothing of it was written."""


@contextmanager
def translated() -> Iterator[None]:
    """Driver and SQLAlchemy errors become the two above, here and only here. Only the
    error's type is kept: a database's message may quote the value it refused."""
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise DatabaseUnavailable(_kind(exc)) from None
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise DatabaseUnavailable(_kind(exc)) from None
        raise DatabaseRefused(_kind(exc)) from None
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:  # COPY runs on the driver
        raise DatabaseUnavailable(_kind(exc)) from None
    except psycopg.Error as exc:
        raise DatabaseRefused(_kind(exc)) from None


def _kind(exc: Exception) -> str:
    orig = getattr(exc, "orig", None)
    return type(orig if orig is not None else exc).__name__


class AuditRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name

    # -- writes ---------------------------------------------------------------

    def write(
        self,
        events: Sequence[AuditEvent],
        chains: dict[str, ChainInfo],
        *,
        fresh: bool = False,
        spans: Sequence[Any] = (),
    ) -> None:
        """Insert sealed events and move their chains' heads, in one transaction.

        Idempotent: an event already stored (a spool replayed twice) is skipped, and
        a head never moves back, so replaying is exactly-once by construction.
        ``fresh`` events were never written before (the recorder's direct path):
        PostgreSQL takes those with COPY, the cheapest way in. ``spans`` (their
        traces, guard.telemetry.spans.SpanRow) go in the same transaction.
        """
        if not events:
            return
        rows = _Rows(events, self._dialect, spans)
        with translated(), self._connect() as conn, conn.begin():
            if fresh and self._dialect == "postgresql":
                _copy(conn, rows)
            else:
                _insert_ignoring(conn, rows, "%s" if self._dialect == "postgresql" else "?")
            for chain_id, chained in groupby(events, key=lambda e: e.chain_id):
                last = list(chained)[-1]
                self._move_head(conn, chains[chain_id], last.seq, last.hash)

    def _move_head(self, conn: sa.Connection, chain: ChainInfo, seq: int, head: str) -> None:
        table = models.chains
        stmt = self._insert(table).values(
            id=uuid.UUID(chain.id),
            instance=chain.instance,
            started_at=chain.started_at,
            keyed=chain.keyed,
            head_seq=seq,
            head_hash=head,
            anchor_seq=0,
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[table.c.id],
                set_={"head_seq": stmt.excluded.head_seq, "head_hash": stmt.excluded.head_hash},
                where=table.c.head_seq < stmt.excluded.head_seq,
            )
        )

    def _insert(self, table: sa.Table) -> Any:
        return (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(table)

    def _connect(self) -> sa.Connection:
        with translated():
            return self.engine.connect()

    # -- reads ----------------------------------------------------------------

    def chains(self) -> list[ChainInfo]:
        with self._connect() as conn:
            rows = conn.execute(sa.select(models.chains).order_by(models.chains.c.started_at))
            return [_chain(row._mapping) for row in rows]

    def chain(self, chain_id: str) -> ChainInfo | None:
        table = models.chains
        with self._connect() as conn:
            row = conn.execute(sa.select(table).where(table.c.id == uuid.UUID(chain_id))).first()
        return _chain(row._mapping) if row else None

    def chain_events(
        self, chain_id: str, after_seq: int, up_to_seq: int | None = None, batch: int = 2000
    ) -> Iterator[AuditEvent]:
        """A chain's events in ``seq`` order, read in keyset pages."""
        table = models.events
        while True:
            stmt = (
                sa.select(table)
                .where(table.c.chain_id == uuid.UUID(chain_id), table.c.seq > after_seq)
                .order_by(table.c.seq)
                .limit(batch)
            )
            if up_to_seq is not None:
                stmt = stmt.where(table.c.seq <= up_to_seq)
            with self._connect() as conn:
                page = [event_of(row._mapping) for row in conn.execute(stmt)]
            yield from page
            if len(page) < batch:
                return
            after_seq = page[-1].seq

    def first_since(self, chain_id: str, since: datetime) -> AuditEvent | None:
        table = models.events
        stmt = (
            sa.select(table)
            .where(table.c.chain_id == uuid.UUID(chain_id), table.c.ended_at >= since)
            .order_by(table.c.seq)
            .limit(1)
        )
        with self._connect() as conn:
            row = conn.execute(stmt).first()
        return event_of(row._mapping) if row else None

    def events(self, stmt: sa.Select[Any]) -> list[AuditEvent]:
        with self._connect() as conn:
            return [event_of(row._mapping) for row in conn.execute(stmt)]

    def iter_events(self, stmt: sa.Select[Any], batch: int = 2000) -> Iterator[AuditEvent]:
        with self._connect() as conn:
            result = conn.execution_options(yield_per=batch).execute(stmt)
            for row in result:
                yield event_of(row._mapping)

    def rows(self, stmt: sa.Select[Any]) -> list[dict[str, Any]]:
        with self._connect() as conn:
            return [dict(row._mapping) for row in conn.execute(stmt)]

    # -- retention ------------------------------------------------------------

    def purge(self, before: datetime) -> int:
        """Delete each chain's events that ended before ``before``, as a prefix of the
        chain, and anchor the chain at the last deleted event so it still verifies; and
        the spans that ended before it."""
        events, chains = models.events, models.chains
        deleted = 0
        with self._connect() as conn, conn.begin():
            cuts = conn.execute(
                sa.select(events.c.chain_id, sa.func.max(events.c.seq))
                .where(events.c.ended_at < before)
                .group_by(events.c.chain_id)
            ).all()
            for chain_id, seq in cuts:
                anchor = conn.execute(
                    sa.select(events.c.hash).where(
                        events.c.chain_id == chain_id, events.c.seq == seq
                    )
                ).scalar_one()
                gone = conn.execute(
                    sa.delete(events).where(events.c.chain_id == chain_id, events.c.seq <= seq)
                )
                deleted += gone.rowcount
                conn.execute(
                    sa.update(chains)
                    .where(chains.c.id == chain_id)
                    .values(anchor_seq=seq, anchor_hash=anchor)
                )
            spans = models.spans  # traces go with the same retention
            conn.execute(sa.delete(spans).where(spans.c.start_time < before))
        return deleted


_FINDING_COLUMNS = ("event_id", "direction", "detector", "label", "count", "max_score")
_RULE_COLUMNS = ("event_id", "direction", "rule_id", "action", "mode")
_JSON_COLUMNS = frozenset(
    {"findings", "rules", "request_texts", "response_texts", "detail", "detector_versions"}
)
_SPAN_COLUMNS = tuple(c.name for c in models.spans.columns)


class _Rows:
    """Events as driver-level rows, for the driver's fastest bulk paths; values take the
    exact form SQLAlchemy's types store (so reads through the models see the same)."""

    def __init__(self, events: Sequence[AuditEvent], dialect: str, spans: Sequence[Any]) -> None:
        pg = dialect == "postgresql"
        self.events: list[tuple[Any, ...]] = []
        self.findings: list[tuple[Any, ...]] = []
        self.rules: list[tuple[Any, ...]] = []
        self.spans = [_span_row(span, pg) for span in spans]
        plan = [(name, _converter(name, pg)) for name in _EVENT_COLUMNS]
        for ev in events:
            row = tuple(convert(getattr(ev, name)) for name, convert in plan)
            self.events.append(row)
            event_id = row[0]
            self.findings.extend(
                (event_id, f.direction, f.detector, f.label, f.count, f.max_score)
                for f in ev.findings
            )
            self.rules.extend(
                (event_id, r.direction, r.rule_id, r.action, r.mode) for r in ev.rules
            )


def _span_row(span: Any, pg: bool) -> tuple[Any, ...]:
    """A span as a row, built directly: a handful of spans per exchange, so no generic
    per-column plan (PostgreSQL's COPY parses the uuid and the JSON from text)."""
    start, end = span.start_time, span.end_time
    return (
        span.trace_id,
        span.span_id,
        span.parent_span_id,
        span.event_id if pg or span.event_id is None else uuid.UUID(span.event_id).hex,
        span.name,
        span.kind,
        start if pg else start.strftime("%Y-%m-%d %H:%M:%S.%f"),
        end if pg else end.strftime("%Y-%m-%d %H:%M:%S.%f"),
        span.duration_ms,
        span.status,
        msgspec.json.encode(span.attributes).decode(),
    )


def _converter(name: str, pg: bool) -> Any:
    if name in {"id", "chain_id"}:
        return uuid.UUID if pg else (lambda value: uuid.UUID(value).hex)
    if name in {"started_at", "ended_at"}:
        return _same if pg else (lambda value: value.strftime("%Y-%m-%d %H:%M:%S.%f"))
    if name in _JSON_COLUMNS:
        return lambda value: None if value is None else msgspec.json.encode(value).decode()
    return _same


def _same(value: Any) -> Any:
    return value


def _copy(conn: sa.Connection, rows: _Rows) -> None:
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        for table, columns, values in _tables(rows):
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in values:
                    copy.write_row(row)
    finally:
        cursor.close()


def _insert_ignoring(conn: sa.Connection, rows: _Rows, mark: str) -> None:
    for table, columns, values in _tables(rows):
        marks = ", ".join([mark] * len(columns))
        names = ", ".join(columns)  # the models' own names, never input
        sql = f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING"  # noqa: S608
        conn.exec_driver_sql(sql, values)


def _tables(rows: _Rows) -> list[tuple[str, Sequence[str], list[tuple[Any, ...]]]]:
    tables = [
        ("audit_events", _EVENT_COLUMNS, rows.events),
        ("audit_findings", _FINDING_COLUMNS, rows.findings),
        ("audit_rule_hits", _RULE_COLUMNS, rows.rules),
        ("spans", _SPAN_COLUMNS, rows.spans),
    ]
    return [entry for entry in tables if entry[2]]


def event_of(row: Any) -> AuditEvent:
    """An event as stored, in the exact form its hash was computed over."""
    data = {name: row[name] for name in _EVENT_COLUMNS}
    data["id"], data["chain_id"] = str(data["id"]), str(data["chain_id"])
    data["started_at"] = as_utc(data["started_at"])
    data["ended_at"] = as_utc(data["ended_at"])
    return msgspec.convert(data, AuditEvent, builtin_types=(datetime,))


def as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _chain(row: Any) -> ChainInfo:
    return ChainInfo(
        id=str(row["id"]),
        instance=row["instance"],
        started_at=as_utc(row["started_at"]),
        keyed=row["keyed"],
        head_seq=row["head_seq"],
        head_hash=row["head_hash"],
        anchor_seq=row["anchor_seq"],
        anchor_hash=row["anchor_hash"],
    )

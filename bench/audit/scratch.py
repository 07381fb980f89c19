"""A scratch PostgreSQL database per run: created, migrated, emptied, counted, dropped."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import Engine

from guard.db import models
from guard.db.base import make_engine
from guard.db.migrate import upgrade

AUDIT_TABLES = ("audit_rule_hits", "audit_findings", "audit_events", "audit_chains")


@dataclass(frozen=True)
class Server:
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    admin_db: str = "postgres"

    def dsn(self, dbname: str) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"


@dataclass(frozen=True)
class Scratch:
    name: str
    url: str
    engine: Engine

    def empty(self) -> None:
        """Every audit table emptied, so each round starts from the same state."""
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"TRUNCATE {', '.join(AUDIT_TABLES)}"))

    def count(self, status: int | None = None) -> int:
        """Rows in audit_events (with this status only, if given)."""
        events = models.events
        query = sa.select(sa.func.count()).select_from(events)
        if status is not None:
            query = query.where(events.c.status == status)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def server_version(self) -> str:
        with self.engine.connect() as conn:
            return str(conn.execute(sa.text("SHOW server_version")).scalar_one())


@contextmanager
def scratch_database(server: Server) -> Iterator[Scratch]:
    """``guard_bench_<random>``, migrated to guard's head schema; dropped on the way out."""
    name = f"guard_bench_{secrets.token_hex(4)}"
    with psycopg.connect(server.dsn(server.admin_db), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    engine: Engine | None = None
    try:
        engine = make_engine(server.url(name))
        upgrade(engine)
        yield Scratch(name, server.url(name), engine)
    finally:
        if engine is not None:
            engine.dispose()
        with psycopg.connect(server.dsn(server.admin_db), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

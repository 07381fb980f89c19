"""Engines: SQLite in WAL mode for the embedded default, PostgreSQL for production."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from guard.errors import ConfigError


def parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError("audit.database_url is not a database URL") from None
    if parsed.get_backend_name() not in {"sqlite", "postgresql"}:
        raise ConfigError("audit.database_url must name sqlite or postgresql")
    return parsed


def describe(url: str | URL) -> str:
    """The URL without its password, fit for logs and messages."""
    return parse_url(str(url)).render_as_string(hide_password=True)


def make_engine(url: str, **kwargs: Any) -> Engine:
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, **kwargs)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    options: dict[str, Any] = {"pool_pre_ping": True, "pool_size": 4, "max_overflow": 4}
    options.update(kwargs)
    return sa.create_engine(parsed, **options)


def _sqlite_engine(url: URL, **kwargs: Any) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": 30}, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        # WAL: readers (queries, exports) never block the recorder's writes; FULL:
        # a committed batch survives a power cut, as the audit trail must.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine

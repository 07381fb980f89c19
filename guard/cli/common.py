"""What the command groups share: the --config option, settings, database access."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from guard.errors import ConfigError
from guard.settings import Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from guard.db.repository import AuditRepository

config_option = click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path),
    default=None,
    help="YAML settings file (default: embedded defaults). GUARD_* variables override it.",
)


def echo_table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    # Tabs, not padding: the lines stay easy to cut and grep, and names never collide.
    for row in (columns, *rows):
        click.echo("\t".join(row))


def echo_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def load_or_exit(path: Path | None) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        click.echo(f"guard: {exc}", err=True)
        sys.exit(2)


def unreachable(url: str, exc: Exception) -> NoReturn:
    from guard.db.base import describe  # noqa: PLC0415

    click.echo(f"guard: cannot reach the audit database {describe(url)} ({kind(exc)})", err=True)
    sys.exit(2)


def sa_errors() -> tuple[type[Exception], ...]:
    import sqlalchemy as sa  # noqa: PLC0415

    from guard.db.repository import DatabaseUnavailable  # noqa: PLC0415

    return (sa.exc.OperationalError, sa.exc.InterfaceError, DatabaseUnavailable)


def kind(exc: Exception) -> str:
    orig = getattr(exc, "orig", None)
    if orig is None and exc.args and isinstance(exc.args[0], str):
        return exc.args[0]  # guard's own errors carry the driver's error type
    return type(orig or exc).__name__


@contextmanager
def engine(config: Path | None) -> Iterator[Engine]:
    from guard.db.base import make_engine  # noqa: PLC0415

    url = load_or_exit(config).audit.database_url
    engine = make_engine(url)
    try:
        yield engine
    except sa_errors() as exc:
        unreachable(url, exc)
    finally:
        engine.dispose()


@contextmanager
def repository(config: Path | None) -> Iterator[AuditRepository]:
    from guard.db.repository import AuditRepository  # noqa: PLC0415

    with engine(config) as eng:
        yield AuditRepository(eng)

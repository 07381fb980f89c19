"""Alembic, driven from guard's own settings: upgrade, current revision, schema check."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from guard.db.base import describe
from guard.errors import GuardError

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
FILE_TEMPLATE = "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s"


class SchemaOutdated(GuardError):
    """The audit database is not at the schema this guard needs."""


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("file_template", FILE_TEMPLATE)
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    if head is None:  # pragma: no cover - the repository always ships migrations
        raise GuardError(f"no migrations found in {MIGRATIONS}")
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(alembic_config(engine), revision)


def ensure_current(engine: Engine, *, auto_migrate: bool) -> None:
    """Refuse an outdated schema (or bring it up to date when the settings allow)."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    if auto_migrate:
        upgrade(engine)
        return
    where = describe(engine.url)
    raise SchemaOutdated(
        f"the audit database {where} is at schema {current or 'none'}, this guard needs "
        f"{head}: run `guard db upgrade` (or set audit.auto_migrate: true)"
    )

"""guard's command line: serve, config check, models, db, audit."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

import click

from guard.app import CONFIG_ENV, configure_logging
from guard.errors import ConfigError
from guard.settings import ENV_PREFIX, Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from guard.audit.queries import AuditFilter, Format
    from guard.db.repository import AuditRepository

_config_option = click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path),
    default=None,
    help="YAML settings file (default: embedded defaults). GUARD_* variables override it.",
)


@click.group()
@click.version_option(package_name="guard")
def main() -> None:
    """guard: a governance and safety proxy for self-hosted LLM servers."""


@main.command()
@_config_option
@click.option("--host", default=None, help="Address to listen on (server.host).")
@click.option("--port", type=int, default=None, help="Port to listen on (server.port).")
@click.option("--workers", type=int, default=None, help="Worker processes (server.workers).")
def serve(config: Path | None, host: str | None, port: int | None, workers: int | None) -> None:
    """Run the proxy."""
    import uvicorn  # noqa: PLC0415  # only this command needs the server

    overrides = {"HOST": host, "PORT": port, "WORKERS": workers}
    for key, value in overrides.items():
        if value is not None:
            os.environ[f"{ENV_PREFIX}SERVER__{key}"] = str(value)
    settings = _load_or_exit(config)
    if config is not None:
        os.environ[CONFIG_ENV] = str(config.resolve())
    server = settings.server
    configure_logging(server.log_level)
    if settings.audit.enabled:
        _check_schema(settings)
    uvicorn.run(
        "guard.app:app_factory",
        factory=True,
        host=server.host,
        port=server.port,
        workers=server.workers,
        loop="uvloop",
        http="httptools",
        log_level=server.log_level,
        access_log=server.access_log,
        server_header=False,
        timeout_graceful_shutdown=30,
    )


@main.group()
def config() -> None:
    """Inspect settings."""


@config.command("check")
@_config_option
def config_check(config: Path | None) -> None:
    """Validate settings and print the effective values as YAML."""
    import yaml  # noqa: PLC0415

    settings = _load_or_exit(config)
    click.echo(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False))


@main.command()
@_config_option
def models(config: Path | None) -> None:
    """List the configured models with their upstream and licence."""
    settings = _load_or_exit(config)
    for model in settings.models:
        lic = model.licence
        commercial = "commercial" if lic.commercial_use else "non-commercial"
        click.echo(f"{model.name}\t{model.upstream}\t{lic.id}\t{commercial}")


def _check_schema(settings: Settings) -> None:
    """Refuse to start on an outdated audit schema, with the fix in one line."""
    from guard.db.base import make_engine  # noqa: PLC0415
    from guard.db.migrate import SchemaOutdated, ensure_current  # noqa: PLC0415

    engine = make_engine(settings.audit.database_url)
    try:
        ensure_current(engine, auto_migrate=settings.audit.auto_migrate)
    except SchemaOutdated as exc:
        click.echo(f"guard: {exc}", err=True)
        sys.exit(2)
    except sa_errors() as exc:
        _unreachable(settings.audit.database_url, exc)
    finally:
        engine.dispose()


def _unreachable(url: str, exc: Exception) -> NoReturn:
    from guard.db.base import describe  # noqa: PLC0415

    click.echo(f"guard: cannot reach the audit database {describe(url)} ({_kind(exc)})", err=True)
    sys.exit(2)


def sa_errors() -> tuple[type[Exception], ...]:
    import sqlalchemy as sa  # noqa: PLC0415

    from guard.db.repository import DatabaseUnavailable  # noqa: PLC0415

    return (sa.exc.OperationalError, sa.exc.InterfaceError, DatabaseUnavailable)


def _kind(exc: Exception) -> str:
    orig = getattr(exc, "orig", None)
    if orig is None and exc.args and isinstance(exc.args[0], str):
        return exc.args[0]  # guard's own errors carry the driver's error type
    return type(orig or exc).__name__


def _load_or_exit(path: Path | None) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        click.echo(f"guard: {exc}", err=True)
        sys.exit(2)


# -- guard db ------------------------------------------------------------------------


@main.group()
def db() -> None:
    """The audit database's schema (Alembic migrations)."""


@db.command("upgrade")
@_config_option
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def db_upgrade(config: Path | None, revision: str) -> None:
    """Apply migrations up to REVISION (a one-off step before `guard serve`)."""
    from guard.db.migrate import current_revision, upgrade  # noqa: PLC0415

    with _engine(config) as engine:
        upgrade(engine, revision)
        click.echo(f"audit database at {current_revision(engine)}")


@db.command("current")
@_config_option
def db_current(config: Path | None) -> None:
    """Print the database's revision and the one this guard needs."""
    from guard.db.migrate import current_revision, head_revision  # noqa: PLC0415

    with _engine(config) as engine:
        current, head = current_revision(engine), head_revision()
    click.echo(f"current: {current or 'none'}\nhead:    {head}")
    if current != head:
        sys.exit(1)


@db.command("revision")
@_config_option
@click.option("-m", "--message", required=True, help="What the migration changes.")
def db_revision(config: Path | None, message: str) -> None:
    """Write a new date-prefixed migration from the models (for guard's developers)."""
    from alembic import command  # noqa: PLC0415

    from guard.db.migrate import alembic_config  # noqa: PLC0415

    with _engine(config) as engine:
        command.revision(alembic_config(engine), message=message, autogenerate=True)


@contextmanager
def _engine(config: Path | None) -> Iterator[Engine]:
    from guard.db.base import make_engine  # noqa: PLC0415

    url = _load_or_exit(config).audit.database_url
    engine = make_engine(url)
    try:
        yield engine
    except sa_errors() as exc:
        _unreachable(url, exc)
    finally:
        engine.dispose()


# -- guard audit ---------------------------------------------------------------------


def _filter_options(command: Callable[..., None]) -> Callable[..., None]:
    """One option per AuditFilter field: the command line and the admin API filter alike."""
    from guard.audit.queries import AuditFilter  # noqa: PLC0415

    for name, field in reversed(AuditFilter.model_fields.items()):
        flag = "--" + name.replace("_", "-")
        command = click.option(flag, name, default=None, help=field.description)(command)
    return command


def _audit_filter(values: dict[str, str | None]) -> AuditFilter:
    from pydantic import ValidationError  # noqa: PLC0415

    from guard.audit.queries import AuditFilter  # noqa: PLC0415

    try:
        return AuditFilter(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        name = str(error["loc"][0]).replace("_", "-")
        raise click.BadParameter(error["msg"], param_hint=f"--{name}") from None


@main.group()
def audit() -> None:
    """Query, export, verify and purge the audit trail."""


@audit.command("list")
@_config_option
@_filter_options
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl", "csv"]), default="table")
def audit_list(config: Path | None, limit: int, fmt: Format, **filters: str | None) -> None:
    """Events, newest first."""
    from guard.audit import queries  # noqa: PLC0415

    with _repository(config) as repo:
        events = repo.events(queries.list_events(_audit_filter(filters), limit))
    for text in queries.render(events, fmt):
        click.echo(text, nl=False)


@audit.command("show")
@_config_option
@click.argument("event_id", type=click.UUID)
def audit_show(config: Path | None, event_id: uuid.UUID) -> None:
    """One exchange: every field, its findings, rules and timings."""
    from guard.audit import queries  # noqa: PLC0415

    with _repository(config) as repo:
        found = repo.events(queries.one_event(event_id))
    if not found:
        click.echo(f"guard: no audit event {event_id}", err=True)
        sys.exit(1)
    click.echo(queries.describe(found[0]))


@audit.command("stats")
@_config_option
@_filter_options
def audit_stats(config: Path | None, **filters: str | None) -> None:
    """Counts by decision, rule, entity type, model, tenant and licence; token totals."""
    from guard.audit import queries  # noqa: PLC0415

    with _repository(config) as repo:
        report = queries.stats(repo, _audit_filter(filters))
    click.echo(queries.describe_stats(report))


@audit.command("export")
@_config_option
@_filter_options
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl")
@click.option("--output", "-o", type=click.File("w"), default="-", help="File (default stdout).")
def audit_export(config: Path | None, fmt: str, output: TextIO, **filters: str | None) -> None:
    """An evidence file: every field of every event, with its chain hashes."""
    from guard.audit import queries  # noqa: PLC0415

    with _repository(config) as repo:
        events = repo.iter_events(queries.export_events(_audit_filter(filters)))
        if fmt == "jsonl":
            for line in queries.jsonl(events):
                output.write(line.decode())
        else:
            output.writelines(queries.csv_lines(events, queries.EXPORT_COLUMNS))


@audit.command("verify")
@_config_option
@click.option("--since", default=None, help="Start at the first event ended at or after this.")
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Verify a JSON lines export instead of the database.",
)
def audit_verify(config: Path | None, since: str | None, path: Path | None) -> None:
    """Walk the hash chains; name the first event changed, deleted or inserted."""
    import msgspec  # noqa: PLC0415

    from guard.audit.chain import verify_events, verify_trail  # noqa: PLC0415
    from guard.audit.events import AuditEvent  # noqa: PLC0415

    settings = _load_or_exit(config)
    env = settings.audit.chain_key_env
    key = os.environ[env].encode() if env else None
    if path is not None:
        with path.open("rb") as file:
            events = [msgspec.json.decode(line, type=AuditEvent) for line in file if line.strip()]
        reports = verify_events(events, key)
    else:
        with _repository(config) as repo:
            reports = verify_trail(repo, key, _since(since))
    bad = [r for r in reports if r.problem]
    for report in reports:
        state = report.problem.describe() if report.problem else "ok"
        click.echo(f"chain {report.chain_id} {report.instance}: {report.checked} events: {state}")
    click.echo(f"{len(reports)} chains, {len(bad)} broken")
    if bad:
        sys.exit(1)


@audit.command("purge")
@_config_option
@click.option("--before", required=True, help="Delete events that ended before this date.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def audit_purge(config: Path | None, before: str, yes: bool) -> None:
    """Enforce retention: delete old events (chains stay verifiable); the purge is
    itself recorded as an audit event."""
    from guard.audit.recorder import record_admin_action  # noqa: PLC0415

    cutoff = _since(before)
    assert cutoff is not None  # noqa: S101  # --before is required
    if not yes:
        click.confirm(f"Delete audit events that ended before {cutoff.isoformat()}?", abort=True)
    settings = _load_or_exit(config)
    with _repository(config) as repo:
        deleted = repo.purge(cutoff)
        record_admin_action(
            repo, settings.audit, "audit purge", {"before": cutoff.isoformat(), "deleted": deleted}
        )
    click.echo(f"deleted {deleted} events")


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("expected an ISO 8601 date or time", param_hint=value) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@contextmanager
def _repository(config: Path | None) -> Iterator[AuditRepository]:
    from guard.db.repository import AuditRepository  # noqa: PLC0415

    with _engine(config) as engine:
        yield AuditRepository(engine)

"""guard's command line: serve, config check, models, licences, db; `guard audit`,
`guard policy`, `guard scan`, `guard models pull`, `guard tenants` and `guard keys`
live in their own modules."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from guard.app import CONFIG_ENV, configure_logging
from guard.cli import common
from guard.cli.audit import audit
from guard.cli.common import (
    config_option,
    echo_json,
    echo_table,
    load_or_exit,
    sa_errors,
    unreachable,
)
from guard.cli.policy import check_bundle, policy
from guard.cli.pull import pull
from guard.cli.scan import scan
from guard.cli.tenants import keys, tenants
from guard.registry.cards import ModelCard
from guard.registry.licences import CatalogueLicence, catalogue
from guard.settings import ENV_PREFIX, ServerSettings, Settings


@click.group()
@click.version_option(package_name="guard")
def main() -> None:
    """guard: a governance and safety proxy for self-hosted LLM servers."""


@main.command()
@config_option
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
    settings = load_or_exit(config)
    if config is not None:
        os.environ[CONFIG_ENV] = str(config.resolve())
    server = settings.server
    configure_logging(server.log_level)
    if settings.audit.enabled:
        _check_schema(settings)
    check_bundle(settings)
    uvicorn.run(
        "guard.app:app_factory",
        factory=True,
        workers=server.workers,
        loop="uvloop",
        **server_options(server),
    )


def server_options(server: ServerSettings) -> dict[str, Any]:
    """How uvicorn serves guard, from ``server`` settings: for ``guard serve`` and for
    anything else that serves guard's app."""
    return {
        "host": server.host,
        "port": server.port,
        "http": "httptools",
        "log_level": server.log_level,
        "access_log": server.access_log,
        "server_header": False,
        "timeout_keep_alive": server.keep_alive_timeout,
        "timeout_graceful_shutdown": 30,
    }


@main.group()
def config() -> None:
    """Inspect settings."""


@config.command("check")
@config_option
def config_check(config: Path | None) -> None:
    """Validate settings and print the effective values as YAML."""
    import yaml  # noqa: PLC0415

    settings = load_or_exit(config)
    click.echo(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False))


_json_option = click.option("--json", "as_json", is_flag=True, help="Print every term as JSON.")
_MODEL_COLUMNS = (
    "MODEL",
    "UPSTREAM",
    "LICENCE",
    "COMMERCIAL",
    "ATTRIBUTION",
    "SHARE-ALIKE",
    "USER THRESHOLD",
    "RESTRICTIONS",
    "UPSTREAM MODEL",
    "LICENCE NAME",
)
_LICENCE_COLUMNS = (
    "ID",
    "COMMERCIAL",
    "ATTRIBUTION",
    "SHARE-ALIKE",
    "USER THRESHOLD",
    "RESTRICTIONS",
    "NAME",
)


@main.group(invoke_without_command=True)
@config_option
@_json_option
@click.pass_context
def models(ctx: click.Context, config: Path | None, as_json: bool) -> None:
    """List the configured models with their upstream and licence terms; `guard models
    pull` downloads a toxicity classifier for `detectors.toxicity`.

    One tab-separated line per model under a header (`column -t -s $'\\t'` aligns it);
    RESTRICTIONS counts the licence's use restrictions, which --json lists."""
    if ctx.invoked_subcommand is not None:
        if config is not None or as_json:
            ctx.fail(f"--config and --json are for the list, not `{ctx.invoked_subcommand}`")
        return
    cards = [ModelCard.from_settings(model) for model in load_or_exit(config).models]
    if as_json:
        echo_json([_model_json(card) for card in cards])
    else:
        echo_table(_MODEL_COLUMNS, [_model_row(card) for card in cards])


@main.command()
@_json_option
def licences(as_json: bool) -> None:
    """List the licence catalogue: the terms a model's `licence: ID` takes.

    Settings may override any term; `guard models` shows the terms in effect."""
    entries = catalogue().licences
    if as_json:
        echo_json([entry.model_dump(mode="json") for entry in entries])
    else:
        echo_table(_LICENCE_COLUMNS, [_licence_row(entry) for entry in entries])


def _model_json(card: ModelCard) -> dict[str, object]:
    return {
        "name": card.name,
        "upstream": card.upstream,
        "upstream_model": card.upstream_model,
        "licence": card.licence_fields(),
    }


def _model_row(card: ModelCard) -> tuple[str, ...]:
    lic = card.licence
    name = lic.name if lic.catalogued else f"{lic.name} (not in the catalogue)"
    return (
        card.name,
        card.upstream,
        lic.id,
        "commercial" if lic.commercial_use else "non-commercial",
        _yes_no(lic.attribution_required),
        _yes_no(lic.share_alike),
        _threshold(lic.user_threshold),
        str(len(lic.restrictions)),
        card.upstream_model,
        name,
    )


def _licence_row(entry: CatalogueLicence) -> tuple[str, ...]:
    return (
        entry.id,
        "commercial" if entry.commercial_use else "non-commercial",
        _yes_no(entry.attribution_required),
        _yes_no(entry.share_alike),
        _threshold(entry.user_threshold),
        str(len(entry.use_restrictions)),
        entry.name,
    )


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _threshold(users: int | None) -> str:
    return f"{users:,}" if users is not None else "-"


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
        unreachable(settings.audit.database_url, exc)
    finally:
        engine.dispose()


# -- guard db ------------------------------------------------------------------------


@main.group()
def db() -> None:
    """The audit database's schema (Alembic migrations)."""


@db.command("upgrade")
@config_option
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def db_upgrade(config: Path | None, revision: str) -> None:
    """Apply migrations up to REVISION (a one-off step before `guard serve`)."""
    from guard.db.migrate import current_revision, upgrade  # noqa: PLC0415

    with common.engine(config) as engine:
        upgrade(engine, revision)
        click.echo(f"audit database at {current_revision(engine)}")


@db.command("current")
@config_option
def db_current(config: Path | None) -> None:
    """Print the database's revision and the one this guard needs."""
    from guard.db.migrate import current_revision, head_revision  # noqa: PLC0415

    with common.engine(config) as engine:
        current, head = current_revision(engine), head_revision()
    click.echo(f"current: {current or 'none'}\nhead:    {head}")
    if current != head:
        sys.exit(1)


@db.command("revision")
@config_option
@click.option("-m", "--message", required=True, help="What the migration changes.")
def db_revision(config: Path | None, message: str) -> None:
    """Write a new date-prefixed migration from the models (for guard's developers)."""
    from alembic import command  # noqa: PLC0415

    from guard.db.migrate import alembic_config  # noqa: PLC0415

    with common.engine(config) as engine:
        command.revision(alembic_config(engine), message=message, autogenerate=True)


models.add_command(pull)
main.add_command(audit)
main.add_command(policy)
main.add_command(scan)
main.add_command(tenants)
main.add_command(keys)

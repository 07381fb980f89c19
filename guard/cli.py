"""guard's command line: serve, config check, models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from guard.app import CONFIG_ENV, configure_logging
from guard.errors import ConfigError
from guard.settings import ENV_PREFIX, Settings, load_settings

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


def _load_or_exit(path: Path | None) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        click.echo(f"guard: {exc}", err=True)
        sys.exit(2)

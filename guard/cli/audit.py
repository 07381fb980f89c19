"""`guard audit`: query, export, verify and purge the audit trail."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

from guard.cli.common import config_option, load_or_exit, repository

if TYPE_CHECKING:
    from guard.audit.queries import AuditFilter, Format


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


@click.group()
def audit() -> None:
    """Query, export, verify and purge the audit trail."""


@audit.command("list")
@config_option
@_filter_options
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl", "csv"]), default="table")
def audit_list(config: Path | None, limit: int, fmt: Format, **filters: str | None) -> None:
    """Events, newest first."""
    from guard.audit import queries  # noqa: PLC0415

    with repository(config) as repo:
        events = repo.events(queries.list_events(_audit_filter(filters), limit))
    for text in queries.render(events, fmt):
        click.echo(text, nl=False)


@audit.command("show")
@config_option
@click.argument("event_id", type=click.UUID)
def audit_show(config: Path | None, event_id: uuid.UUID) -> None:
    """One exchange: every field, its findings, rules and timings, its timing tree
    (spans), and the policy files that decided it."""
    from guard.audit import queries  # noqa: PLC0415

    with repository(config) as repo:
        found = repo.events(queries.one_event(event_id))
        if not found:
            click.echo(f"guard: no audit event {event_id}", err=True)
            sys.exit(1)
        event = found[0]
        version = event.policy_version
        bundle = repo.events(queries.policy_bundle(version)) if version else []
        spans = repo.rows(queries.trace_spans(event.trace_id)) if event.kind == "exchange" else []
    click.echo(queries.describe(event))
    if event.kind == "exchange":
        click.echo(queries.describe_trace(spans))
    if version and not version.startswith("builtin:"):
        click.echo(queries.describe_bundle(version, bundle[0] if bundle else None))


@audit.command("stats")
@config_option
@_filter_options
def audit_stats(config: Path | None, **filters: str | None) -> None:
    """Counts by decision, rule, entity type, model, tenant and licence; token totals."""
    from guard.audit import queries  # noqa: PLC0415

    with repository(config) as repo:
        report = queries.stats(repo, _audit_filter(filters))
    click.echo(queries.describe_stats(report))


@audit.command("export")
@config_option
@_filter_options
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl")
@click.option("--output", "-o", type=click.File("w"), default="-", help="File (default stdout).")
def audit_export(config: Path | None, fmt: str, output: TextIO, **filters: str | None) -> None:
    """An evidence file: every field of every event, with its chain hashes."""
    from guard.audit import queries  # noqa: PLC0415

    with repository(config) as repo:
        events = repo.iter_events(queries.export_events(_audit_filter(filters)))
        if fmt == "jsonl":
            for line in queries.jsonl(events):
                output.write(line.decode())
        else:
            output.writelines(queries.csv_lines(events, queries.EXPORT_COLUMNS))


@audit.command("verify")
@config_option
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

    settings = load_or_exit(config)
    env = settings.audit.chain_key_env
    key = os.environ[env].encode() if env else None
    if path is not None:
        with path.open("rb") as file:
            events = [msgspec.json.decode(line, type=AuditEvent) for line in file if line.strip()]
        reports = verify_events(events, key)
    else:
        with repository(config) as repo:
            reports = verify_trail(repo, key, _since(since))
    bad = [r for r in reports if r.problem]
    for report in reports:
        state = report.problem.describe() if report.problem else "ok"
        click.echo(f"chain {report.chain_id} {report.instance}: {report.checked} events: {state}")
    click.echo(f"{len(reports)} chains, {len(bad)} broken")
    if bad:
        sys.exit(1)


@audit.command("purge")
@config_option
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
    settings = load_or_exit(config)
    with repository(config) as repo:
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

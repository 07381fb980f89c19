"""Compliance queries over the audit trail: one filter model for the command line
and the admin API, the SQL it compiles to, and the output formats.

The SQL is plain SQLAlchemy Core, the same on SQLite and PostgreSQL; the
repository runs it. Findings and rules are filtered through their own indexed
tables, never through JSON operators.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from guard.audit.events import AuditEvent
from guard.db import models
from guard.db.repository import AuditRepository

Format = Literal["table", "jsonl", "csv"]
E = models.events

# Columns of the table and CSV outputs (JSON lines carry every field).
LIST_COLUMNS = [
    "id",
    "started_at",
    "client_address",
    "tenant_id",
    "route",
    "model",
    "licence_id",
    "decision",
    "status",
    "input_scan",
    "output_scan",
    "rules",
    "findings",
    "prompt_tokens",
    "completion_tokens",
    "total_ms",
]
EXPORT_COLUMNS = [c.name for c in models.events.columns]


class AuditFilter(BaseModel):
    """Which events: every field narrows the selection; none given means all."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    since: datetime | None = Field(default=None, description="Started at or after (ISO 8601).")
    until: datetime | None = Field(default=None, description="Started before (ISO 8601).")
    tenant: str | None = None
    client: str | None = Field(default=None, description="Client address.")
    model: str | None = None
    licence: str | None = Field(default=None, description="Licence id, e.g. llama3.1.")
    commercial: bool | None = Field(default=None, description="The licence allows commercial use.")
    decision: Literal["allow", "flag", "redact", "block"] | None = None
    rule: str | None = Field(default=None, description="A rule id that fired.")
    entity: str | None = Field(default=None, description="A finding type (entity or label).")
    min_score: Annotated[float, Field(ge=0, le=1)] | None = Field(
        default=None, description="A finding scored at least this (of --entity, if given)."
    )
    status: int | None = Field(default=None, description="HTTP status returned.")
    scan: Literal["scanned", "partially_scanned", "unscanned", "degraded"] | None = Field(
        default=None, description="Scan status of either direction."
    )
    kind: Literal["exchange", "admin", "policy"] | None = None

    def where(self) -> list[sa.ColumnElement[bool]]:
        """The conditions on ``audit_events`` this filter means."""
        exact = {
            "tenant_id": self.tenant,
            "client_address": self.client,
            "model": self.model,
            "licence_id": self.licence,
            "licence_commercial_use": self.commercial,
            "decision": self.decision,
            "status": self.status,
            "kind": self.kind,
        }
        clauses = [E.c[name] == value for name, value in exact.items() if value is not None]
        if self.since:
            clauses.append(E.c.started_at >= self.since)
        if self.until:
            clauses.append(E.c.started_at < self.until)
        if self.scan:
            clauses.append(sa.or_(E.c.input_scan == self.scan, E.c.output_scan == self.scan))
        if self.rule:
            hits = models.rule_hits
            clauses.append(
                E.c.id.in_(sa.select(hits.c.event_id).where(hits.c.rule_id == self.rule))
            )
        if self.entity or self.min_score is not None:
            clauses.append(E.c.id.in_(self._finding_ids()))
        return clauses

    def _finding_ids(self) -> sa.Select[Any]:
        found = models.findings
        stmt = sa.select(found.c.event_id)
        if self.entity:
            stmt = stmt.where(found.c.label == self.entity)
        if self.min_score is not None:
            stmt = stmt.where(found.c.max_score >= self.min_score)
        return stmt


def list_events(f: AuditFilter, limit: int) -> sa.Select[Any]:
    """Newest first."""
    return (
        sa.select(E).where(*f.where()).order_by(E.c.started_at.desc(), E.c.id.desc()).limit(limit)
    )


def export_events(f: AuditFilter) -> sa.Select[Any]:
    """Chain order, so the evidence file can be verified as it reads."""
    return sa.select(E).where(*f.where()).order_by(E.c.chain_id, E.c.seq)


def one_event(event_id: uuid.UUID) -> sa.Select[Any]:
    return sa.select(E).where(E.c.id == event_id)


def policy_bundle(version: str) -> sa.Select[Any]:
    """The first recorded load of a policy bundle: its event holds the bundle's files."""
    return (
        sa.select(E)
        .where(E.c.policy_version == version, E.c.kind == "policy", E.c.decision == "loaded")
        .order_by(E.c.started_at, E.c.id)
        .limit(1)
    )


def trace_spans(trace_id: str) -> sa.Select[Any]:
    spans = models.spans
    return sa.select(spans).where(spans.c.trace_id == trace_id).order_by(spans.c.start_time)


def describe_trace(rows: list[dict[str, Any]]) -> str:
    """The exchange's timing tree: each span at its offset from the first, indented
    under its parent."""
    if not rows:
        return "timings tree: no spans recorded (tracing off, or not sampled)"
    start = min(row["start_time"] for row in rows)
    ids = {row["span_id"] for row in rows}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for row in rows:
        parent = row["parent_span_id"] if row["parent_span_id"] in ids else None
        children.setdefault(parent, []).append(row)
    lines = ["timing tree (ms from arrival, duration):"]

    def walk(parent: str | None, depth: int) -> None:
        for row in children.get(parent, []):
            offset = (row["start_time"] - start).total_seconds() * 1000
            lines.append(f"  {'  ' * depth}{row['name']}  +{offset:.3f}  {row['duration_ms']:.3f}")
            walk(row["span_id"], depth + 1)

    walk(None, 0)
    return "\n".join(lines)


def describe_bundle(version: str, event: AuditEvent | None) -> str:
    """The policy files behind a decision, as they were when it was made."""
    files = (event.detail or {}).get("files") if event else None
    if event is None or not isinstance(files, dict):
        return f"policy bundle {version}: not in the audit store"
    lines = [f"policy bundle {version} (first in force {event.started_at.isoformat()}):"]
    for name, text in sorted(files.items()):
        lines.append(f"--- {name}")
        lines.extend(f"  {line}" for line in str(text).splitlines())
    return "\n".join(lines)


def stats(repo: AuditRepository, f: AuditFilter) -> dict[str, list[dict[str, Any]]]:
    """Counts by decision, rule, entity type, model, tenant and licence; token totals
    per tenant and model."""
    where = f.where()
    tenant = sa.func.coalesce(E.c.tenant_id, E.c.client_address).label("tenant")
    count = sa.func.count().label("events")

    def by(*columns: Any) -> list[dict[str, Any]]:
        stmt = sa.select(*columns, count).where(*where).group_by(*columns).order_by(count.desc())
        return repo.rows(stmt)

    rules, found = models.rule_hits, models.findings
    return {
        "decision": by(E.c.decision),
        "rule": repo.rows(
            sa.select(rules.c.rule_id, rules.c.action, count)
            .join(E, E.c.id == rules.c.event_id)
            .where(*where)
            .group_by(rules.c.rule_id, rules.c.action)
            .order_by(count.desc())
        ),
        "entity": repo.rows(
            sa.select(
                found.c.direction,
                found.c.label,
                count,
                sa.func.sum(found.c.count).label("findings"),
                sa.func.max(found.c.max_score).label("max_score"),
            )
            .join(E, E.c.id == found.c.event_id)
            .where(*where)
            .group_by(found.c.direction, found.c.label)
            .order_by(count.desc())
        ),
        "model": by(E.c.model),
        "tenant": by(tenant),
        "licence": by(E.c.licence_id, E.c.licence_commercial_use),
        "tokens": repo.rows(
            sa.select(
                tenant,
                E.c.model,
                count,
                sa.func.coalesce(sa.func.sum(E.c.prompt_tokens), 0).label("prompt_tokens"),
                sa.func.coalesce(sa.func.sum(E.c.completion_tokens), 0).label("completion_tokens"),
            )
            .where(*where)
            .group_by(tenant, E.c.model)
            .order_by(tenant, E.c.model)
        ),
    }


# -- output formats ----------------------------------------------------------------


def jsonl(events: Iterable[AuditEvent]) -> Iterator[bytes]:
    for event in events:
        yield msgspec.json.encode(event) + b"\n"


def csv_lines(events: Iterable[AuditEvent], columns: list[str]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    yield _drain(buffer)
    for event in events:
        writer.writerow([_cell(getattr(event, name)) for name in columns])
        yield _drain(buffer)


def table(events: Iterable[AuditEvent]) -> str:
    rows = [[_short(name, getattr(ev, name)) for name in LIST_COLUMNS] for ev in events]
    header = [name.replace("_", " ") for name in LIST_COLUMNS]
    widths = [max(len(str(cell)) for cell in col) for col in zip(header, *rows, strict=False)]
    lines = [header, *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def render(events: Iterable[AuditEvent], fmt: Format) -> Iterator[str]:
    if fmt == "table":
        yield table(events) + "\n"
    elif fmt == "jsonl":
        yield from (line.decode() for line in jsonl(events))
    else:
        yield from csv_lines(events, LIST_COLUMNS)


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, (list, tuple, dict)):
        return msgspec.json.encode(value).decode()
    return value


def _short(name: str, value: Any) -> str:
    if name == "rules":
        return ",".join(hit.rule_id for hit in value) or "-"
    if name == "findings":
        return ",".join(f"{f.label}x{f.count}" for f in value) or "-"
    if name == "started_at":
        return str(value.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
    return "-" if value is None else str(value)


def describe(event: AuditEvent) -> str:
    """One event for a person to read: fields, then timings, findings, the versions of
    the detectors behind them, and rules."""
    data = msgspec.to_builtins(event)
    skip = {"findings", "rules", "request_texts", "response_texts", "detail", "detector_versions"}
    skip |= {name for name in data if name.endswith("_ms")}
    lines = [f"{name}: {_cell(value) or '-'}" for name, value in data.items() if name not in skip]
    lines.append("timings (ms):")
    for stage in ("guard_in", "upstream_ttfb", "upstream_total", "guard_out", "total"):
        value = data[f"{stage}_ms"]
        lines.append(f"  {stage}: {'-' if value is None else value}")
    lines.append("findings:" if event.findings else "findings: none")
    lines.extend(
        f"  {f.direction} {f.detector} {f.label}: {f.count} (max score {f.max_score})"
        for f in event.findings
    )
    versions = event.detector_versions
    lines.append("detector versions:" if versions else "detector versions: none recorded")
    lines.extend(f"  {name}: {version}" for name, version in sorted(versions.items()))
    lines.append("rules:" if event.rules else "rules: none")
    lines.extend(
        f"  {r.direction} {r.rule_id}: {r.action}" + (" (monitor)" if r.mode == "monitor" else "")
        for r in event.rules
    )
    if event.detail and event.kind != "policy":  # a bundle's files: see describe_bundle
        lines.append(f"detail: {_cell(event.detail)}")
    for name in ("request_texts", "response_texts"):
        texts = getattr(event, name)
        if texts is not None:
            lines.append(f"{name.replace('_', ' ')}:")
            lines.extend(f"  [{i}] {text}" for i, text in enumerate(texts))
    return "\n".join(lines)


def describe_stats(report: dict[str, list[dict[str, Any]]]) -> str:
    blocks = []
    for section, rows in report.items():
        if not rows:
            blocks.append(f"by {section}: none")
            continue
        columns = list(rows[0])
        cells = [
            [str(_cell(row[c]) if row[c] is not None else "-") for c in columns] for row in rows
        ]
        widths = [max(len(x) for x in col) for col in zip(columns, *cells, strict=False)]
        body = [
            "  " + "  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip()
            for line in [columns, *cells]
        ]
        blocks.append(f"by {section}:\n" + "\n".join(body))
    return "\n\n".join(blocks)


def to_json(event: AuditEvent) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(event)
    return data

"""guard's tables: the audit trail, and the tenants and API keys it serves.
Migrations in ``migrations/`` build exactly this schema.

Each audit event is one row of ``audit_events``; the findings summary and the
rules that fired are also kept one row per type in ``audit_findings`` and
``audit_rule_hits``, indexed, so that compliance queries filter without JSON
operators (the same SQL on SQLite and PostgreSQL). ``audit_chains`` holds each
hash chain's head, so a deleted tail shows, and its retention anchor.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JSONValue = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)


class AuditEventRow(Base):
    __tablename__ = "audit_events"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    chain_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64))
    kind: Mapped[str] = mapped_column(sa.String(16))
    started_at: Mapped[datetime] = mapped_column(Timestamp)
    ended_at: Mapped[datetime] = mapped_column(Timestamp)
    tenant_id: Mapped[str | None] = mapped_column(sa.String(128))
    key_id: Mapped[str | None] = mapped_column(sa.String(128))
    client_address: Mapped[str] = mapped_column(sa.String(64))
    method: Mapped[str] = mapped_column(sa.String(16))
    route: Mapped[str] = mapped_column(sa.String(256))
    model: Mapped[str | None] = mapped_column(sa.String(256))
    upstream: Mapped[str | None] = mapped_column(sa.String(128))
    upstream_model: Mapped[str | None] = mapped_column(sa.String(256))
    licence_id: Mapped[str | None] = mapped_column(sa.String(128))
    licence_commercial_use: Mapped[bool | None] = mapped_column(sa.Boolean)
    licence_attribution_required: Mapped[bool | None] = mapped_column(sa.Boolean)
    model_revision: Mapped[str | None] = mapped_column(sa.String(128))
    policy_version: Mapped[str | None] = mapped_column(sa.String(128))
    decision: Mapped[str | None] = mapped_column(sa.String(8))
    status: Mapped[int] = mapped_column(sa.Integer)
    error_code: Mapped[str | None] = mapped_column(sa.String(64))
    input_scan: Mapped[str] = mapped_column(sa.String(20))
    output_scan: Mapped[str] = mapped_column(sa.String(20))
    stream: Mapped[bool] = mapped_column(sa.Boolean)
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSONValue)
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSONValue)
    request_texts: Mapped[list[str] | None] = mapped_column(JSONValue)
    response_texts: Mapped[list[str] | None] = mapped_column(JSONValue)
    texts_truncated: Mapped[bool] = mapped_column(sa.Boolean)
    prompt_tokens: Mapped[int | None] = mapped_column(sa.Integer)
    completion_tokens: Mapped[int | None] = mapped_column(sa.Integer)
    usage_source: Mapped[str | None] = mapped_column(sa.String(16))
    guard_in_ms: Mapped[float | None] = mapped_column(sa.Float)
    upstream_ttfb_ms: Mapped[float | None] = mapped_column(sa.Float)
    upstream_total_ms: Mapped[float | None] = mapped_column(sa.Float)
    guard_out_ms: Mapped[float | None] = mapped_column(sa.Float)
    total_ms: Mapped[float] = mapped_column(sa.Float)
    trace_id: Mapped[str] = mapped_column(sa.String(32))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONValue)
    # detector name -> model, revision, licence, device; '{}' for rows written before it
    detector_versions: Mapped[dict[str, str]] = mapped_column(
        JSONValue, server_default=sa.text("'{}'")
    )

    __table_args__ = (
        sa.UniqueConstraint("chain_id", "seq"),
        sa.Index(None, "started_at"),
        sa.Index(None, "model", "started_at"),
        sa.Index(None, "tenant_id", "started_at"),
        sa.Index(None, "licence_id", "started_at"),
        sa.Index(None, "decision", "started_at"),
        sa.Index(None, "trace_id"),
        sa.Index(None, "policy_version", "kind"),
    )


class AuditFindingRow(Base):
    """One row per finding type per event and direction: counts and max score, no values."""

    __tablename__ = "audit_findings"

    event_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("audit_events.id", ondelete="CASCADE"), primary_key=True
    )
    direction: Mapped[str] = mapped_column(sa.String(8), primary_key=True)
    detector: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    label: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    count: Mapped[int] = mapped_column(sa.Integer)
    max_score: Mapped[float] = mapped_column(sa.Float)

    __table_args__ = (sa.Index(None, "label", "max_score"),)


class AuditRuleHitRow(Base):
    """One row per rule that fired on an event, per direction."""

    __tablename__ = "audit_rule_hits"

    event_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("audit_events.id", ondelete="CASCADE"), primary_key=True
    )
    direction: Mapped[str] = mapped_column(sa.String(8), primary_key=True)
    rule_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    action: Mapped[str] = mapped_column(sa.String(8))
    # monitor: the rule's policy runs in shadow mode; recorded, not acted on
    mode: Mapped[str] = mapped_column(sa.String(8), server_default="enforce")

    __table_args__ = (sa.Index(None, "rule_id"),)


class AuditChainRow(Base):
    """A hash chain: one per recording process. ``head_*`` moves with every batch in the
    same transaction as its events; ``anchor_*`` is where retention cut the chain."""

    __tablename__ = "audit_chains"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    instance: Mapped[str] = mapped_column(sa.String(256))
    started_at: Mapped[datetime] = mapped_column(Timestamp)
    keyed: Mapped[bool] = mapped_column(sa.Boolean)
    head_seq: Mapped[int] = mapped_column(sa.BigInteger)
    head_hash: Mapped[str] = mapped_column(sa.String(64))
    anchor_seq: Mapped[int] = mapped_column(sa.BigInteger, server_default="0")
    anchor_hash: Mapped[str | None] = mapped_column(sa.String(64))


metadata = Base.metadata


class TraceSpanRow(Base):
    """One span of an exchange's trace (guard.telemetry.spans), linked to its audit
    event by trace id and event id: timings and attributes, never content."""

    __tablename__ = "spans"

    trace_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    span_id: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    parent_span_id: Mapped[str | None] = mapped_column(sa.String(16))
    event_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    name: Mapped[str] = mapped_column(sa.String(128))
    kind: Mapped[str] = mapped_column(sa.String(16))
    start_time: Mapped[datetime] = mapped_column(Timestamp)
    end_time: Mapped[datetime] = mapped_column(Timestamp)
    duration_ms: Mapped[float] = mapped_column(sa.Float)
    status: Mapped[str] = mapped_column(sa.String(8))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONValue)

    # Looked up by trace id (the key's first column) and purged by time; no more
    # indexes, each costs every exchange's insert.
    __table_args__ = (sa.Index(None, "start_time"),)


class TenantRow(Base):
    """A team that uses guard: the attributes policies read, and its limits."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONValue)
    limits: Mapped[dict[str, Any]] = mapped_column(JSONValue)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class ApiKeyRow(Base):
    """An API key: never the key itself, only its salted hash (guard.tenancy.keys).
    Revoked keys stay, so that the audit trail's key ids keep their meaning."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(sa.ForeignKey("tenants.id", ondelete="RESTRICT"))
    role: Mapped[str] = mapped_column(sa.String(16))
    name: Mapped[str] = mapped_column(sa.String(128))
    salt: Mapped[str] = mapped_column(sa.String(32))
    hash: Mapped[str] = mapped_column(sa.String(64))
    limits: Mapped[dict[str, Any]] = mapped_column(JSONValue)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)

    __table_args__ = (sa.Index(None, "tenant_id"),)


events = sa.Table("audit_events", metadata)  # the tables above, looked up by name
findings = sa.Table("audit_findings", metadata)
rule_hits = sa.Table("audit_rule_hits", metadata)
chains = sa.Table("audit_chains", metadata)
spans = sa.Table("spans", metadata)
tenants = sa.Table("tenants", metadata)
api_keys = sa.Table("api_keys", metadata)

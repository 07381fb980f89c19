"""The audit trail: events, findings, rule hits and hash chains.

Revision ID: 2026112801
Revises:
Created: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "2026112801"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_chains",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("instance", sa.String(length=256), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("keyed", sa.Boolean(), nullable=False),
        sa.Column("head_seq", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("anchor_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("anchor_hash", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_chains")),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("chain_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=True),
        sa.Column("key_id", sa.String(length=128), nullable=True),
        sa.Column("client_address", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("route", sa.String(length=256), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=True),
        sa.Column("upstream", sa.String(length=128), nullable=True),
        sa.Column("upstream_model", sa.String(length=256), nullable=True),
        sa.Column("licence_id", sa.String(length=128), nullable=True),
        sa.Column("licence_commercial_use", sa.Boolean(), nullable=True),
        sa.Column("licence_attribution_required", sa.Boolean(), nullable=True),
        sa.Column("model_revision", sa.String(length=128), nullable=True),
        sa.Column("policy_version", sa.String(length=128), nullable=True),
        sa.Column("decision", sa.String(length=8), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("input_scan", sa.String(length=20), nullable=False),
        sa.Column("output_scan", sa.String(length=20), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("findings", JSON, nullable=False),
        sa.Column("rules", JSON, nullable=False),
        sa.Column("request_texts", JSON, nullable=True),
        sa.Column("response_texts", JSON, nullable=True),
        sa.Column("texts_truncated", sa.Boolean(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("usage_source", sa.String(length=16), nullable=True),
        sa.Column("guard_in_ms", sa.Float(), nullable=True),
        sa.Column("upstream_ttfb_ms", sa.Float(), nullable=True),
        sa.Column("upstream_total_ms", sa.Float(), nullable=True),
        sa.Column("guard_out_ms", sa.Float(), nullable=True),
        sa.Column("total_ms", sa.Float(), nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("detail", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
        sa.UniqueConstraint("chain_id", "seq", name=op.f("uq_audit_events_chain_id_seq")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_events_decision_started_at"),
            ["decision", "started_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_audit_events_licence_id_started_at"),
            ["licence_id", "started_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_audit_events_model_started_at"), ["model", "started_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_audit_events_started_at"), ["started_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_audit_events_tenant_id_started_at"),
            ["tenant_id", "started_at"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_audit_events_trace_id"), ["trace_id"], unique=False)

    op.create_table(
        "audit_findings",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("detector", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("max_score", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["audit_events.id"],
            name=op.f("fk_audit_findings_event_id_audit_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "event_id", "direction", "detector", "label", name=op.f("pk_audit_findings")
        ),
    )
    with op.batch_alter_table("audit_findings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_findings_label_max_score"), ["label", "max_score"], unique=False
        )

    op.create_table(
        "audit_rule_hits",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("rule_id", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["audit_events.id"],
            name=op.f("fk_audit_rule_hits_event_id_audit_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "event_id", "direction", "rule_id", name=op.f("pk_audit_rule_hits")
        ),
    )
    with op.batch_alter_table("audit_rule_hits", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_rule_hits_rule_id"), ["rule_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_rule_hits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_rule_hits_rule_id"))

    op.drop_table("audit_rule_hits")
    with op.batch_alter_table("audit_findings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_findings_label_max_score"))

    op.drop_table("audit_findings")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_trace_id"))
        batch_op.drop_index(batch_op.f("ix_audit_events_tenant_id_started_at"))
        batch_op.drop_index(batch_op.f("ix_audit_events_started_at"))
        batch_op.drop_index(batch_op.f("ix_audit_events_model_started_at"))
        batch_op.drop_index(batch_op.f("ix_audit_events_licence_id_started_at"))
        batch_op.drop_index(batch_op.f("ix_audit_events_decision_started_at"))

    op.drop_table("audit_events")
    op.drop_table("audit_chains")

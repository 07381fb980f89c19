"""Policy versions: shadow-mode rule hits, and finding a bundle by its version.

``audit_rule_hits.mode`` tells rules that acted (``enforce``) from rules of a policy
in shadow rollout (``monitor``). Policy bundles are recorded as events of kind
``policy`` carrying the bundle's files; the index finds the one behind a decision.

Revision ID: 2026112802
Revises: 2026112801
Created: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2026112802"
down_revision: str | None = "2026112801"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_events_policy_version_kind"),
            ["policy_version", "kind"],
            unique=False,
        )
    with op.batch_alter_table("audit_rule_hits", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("mode", sa.String(length=8), server_default="enforce", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("audit_rule_hits", schema=None) as batch_op:
        batch_op.drop_column("mode")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_policy_version_kind"))

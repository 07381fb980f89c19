"""Detector versions: what produced each exchange's findings.

``audit_events.detector_versions`` maps each detector that scanned the exchange and
says its version to that version (model name, revision, licence, device). Rows
written before it hold ``{}``, which the hash chain leaves out of the canonical
encoding, so they keep verifying.

Revision ID: 2026112901
Revises: 2026112803
Created: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "2026112901"
down_revision: str | None = "2026112803"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("detector_versions", JSON, server_default=sa.text("'{}'"), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_column("detector_versions")

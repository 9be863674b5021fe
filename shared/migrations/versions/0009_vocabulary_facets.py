"""Vocabulary facets (single/multi), per-entry thresholds and single-label tenant taggers

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "vocabulary_facets",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("allow_none", sa.Boolean(), nullable=False),
        sa.Column("none_below", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "name", name="uq_vocabulary_facet_name"),
    )
    # Existing entries keep no facet: they behave exactly as before (independent, 0.5).
    with op.batch_alter_table("vocabulary_entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("facet", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("threshold", sa.Float(), nullable=True))
    with op.batch_alter_table("taggers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("mode", sa.String(length=16), nullable=False, server_default="multi")
        )


def downgrade() -> None:
    with op.batch_alter_table("taggers", schema=None) as batch_op:
        batch_op.drop_column("mode")
    with op.batch_alter_table("vocabulary_entries", schema=None) as batch_op:
        batch_op.drop_column("threshold")
        batch_op.drop_column("facet")
    op.drop_table("vocabulary_facets")

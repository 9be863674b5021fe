"""tenant taggers: classifiers per tenant and their training examples

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 12:29:19.652193
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "taggers",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column(
            "labels",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("trained_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "name", name="uq_tagger_tenant_name"),
    )
    with op.batch_alter_table("taggers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_taggers_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "tagger_examples",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tagger_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("content_id", sa.String(length=36), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["content_id"], ["content_items.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tagger_id"], ["taggers.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tagger_id", "content_id", "label", name="uq_tagger_example"),
    )
    with op.batch_alter_table("tagger_examples", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_tagger_examples_content_id"), ["content_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_tagger_examples_tagger_id"), ["tagger_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("tagger_examples", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tagger_examples_tagger_id"))
        batch_op.drop_index(batch_op.f("ix_tagger_examples_content_id"))

    op.drop_table("tagger_examples")
    with op.batch_alter_table("taggers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_taggers_tenant_id"))

    op.drop_table("taggers")

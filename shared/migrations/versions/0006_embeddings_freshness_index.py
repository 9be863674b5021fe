"""Embeddings: one index on (tenant, space, model, created_at) for the similar-content cache

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 23:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_embeddings_tenant_space_model_created"


def upgrade() -> None:
    with op.batch_alter_table("embeddings", schema=None) as batch_op:
        batch_op.create_index(INDEX, ["tenant_id", "space", "model", "created_at"], unique=False)
        # Its prefix: the single-column index is redundant now.
        batch_op.drop_index(batch_op.f("ix_embeddings_tenant_id"))


def downgrade() -> None:
    with op.batch_alter_table("embeddings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_embeddings_tenant_id"), ["tenant_id"], unique=False)
        batch_op.drop_index(INDEX)

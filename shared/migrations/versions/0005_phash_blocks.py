"""pHash blocks for indexed near-duplicate lookups

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 21:05:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared import phash_index

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = phash_index.COLUMNS
BACKFILL_ROWS = 5000


def upgrade() -> None:
    with op.batch_alter_table("content_items", schema=None) as batch_op:
        for name in COLUMNS:
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=True))
    _backfill()
    with op.batch_alter_table("content_items", schema=None) as batch_op:
        for name in COLUMNS:
            batch_op.create_index(f"ix_content_{name}", ["tenant_id", name], unique=False)


def _backfill() -> None:
    """Split the pHashes already stored, in pages by id (the table can be large)."""
    conn = op.get_bind()
    items = sa.table("content_items", sa.column("id"), sa.column("phash"),
                     *(sa.column(n) for n in COLUMNS))  # fmt: skip
    last = ""
    while True:
        rows = conn.execute(
            sa.select(items.c.id, items.c.phash)
            .where(items.c.phash.is_not(None), items.c.id > last)
            .order_by(items.c.id)
            .limit(BACKFILL_ROWS)
        ).all()
        if not rows:
            return
        conn.execute(
            items.update().where(items.c.id == sa.bindparam("row_id")),
            [{"row_id": r.id, **phash_index.columns(r.phash)} for r in rows],
        )
        last = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table("content_items", schema=None) as batch_op:
        for name in COLUMNS:
            batch_op.drop_index(f"ix_content_{name}")
        for name in reversed(COLUMNS):
            batch_op.drop_column(name)

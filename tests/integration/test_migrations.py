"""Migrations run both ways on SQLite and PostgreSQL, and match the models exactly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from shared.db.migrate import downgrade, upgrade
from shared.db.models import Base
from tests.conftest import scratch_pg_database

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    with scratch_pg_database("atelier_mig") as url:
        yield url


def test_upgrade_downgrade_upgrade_and_no_drift(empty_db: str) -> None:
    upgrade(empty_db)
    downgrade(empty_db, "base")
    upgrade(empty_db)
    engine = create_engine(empty_db)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diffs == [], f"models and migrations differ: {diffs}"


def test_phash_blocks_are_backfilled(empty_db: str) -> None:
    """Rows stored before the blocks existed get them from their pHash on upgrade."""
    import sqlalchemy as sa

    from shared import phash_index

    upgrade(empty_db, "0004")
    engine = create_engine(empty_db)
    hashes = [f"{i * 0x9E3779B97F4A7C15 % (1 << 64):016x}" for i in range(1, 7)] + [None]
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO tenants (id, name, created_at) VALUES ('t', 't', :n)"),
                {"n": "2026-01-01 00:00:00"},
            )
            for i, h in enumerate(hashes):
                conn.execute(
                    sa.text(
                        "INSERT INTO content_items (id, tenant_id, kind, metadata, status, phash,"
                        " created_at, updated_at) VALUES (:id, 't', 'image', '{}', 'ready', :h,"
                        " :n, :n)"
                    ),
                    {"id": f"c{i}", "h": h, "n": "2026-01-01 00:00:00"},
                )
        upgrade(empty_db)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT id, phash, phash_b0, phash_b1, phash_b2, phash_b3 FROM content_items"
                    " ORDER BY id"
                )
            ).all()
    finally:
        engine.dispose()
    assert len(rows) == len(hashes)
    for row in rows:
        expected = phash_index.blocks(row.phash) if row.phash else (None,) * 4
        assert tuple(row[2:]) == expected

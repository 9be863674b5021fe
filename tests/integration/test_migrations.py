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

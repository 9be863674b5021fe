"""Throw-away PostgreSQL databases, for the tests and the benchmarks."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

DEFAULT_SERVER = os.environ.get(
    "ATELIER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def libpq(url: str) -> str:
    """A SQLAlchemy ``postgresql+psycopg://`` URL as libpq takes it."""
    return url.replace("postgresql+psycopg://", "postgresql://")


@contextmanager
def scratch_database(server: str = DEFAULT_SERVER, *, prefix: str = "atelier") -> Iterator[str]:
    """Create a database on ``server``, yield its URL, drop it (and its engine) afterwards."""
    import psycopg

    from shared.db.session import get_engine

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq(server), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{server.rsplit('/', 1)[0]}/{name}"
    try:
        yield url
    finally:
        get_engine(url).dispose()
        with psycopg.connect(libpq(server), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch_url(kind: Literal["sqlite", "postgresql"], directory: str | Path) -> Iterator[str]:
    """A migrated throw-away database for a benchmark: a SQLite file in ``directory``, or a
    scratch PostgreSQL database on ``ATELIER_TEST_POSTGRES_URL``."""
    from shared.db.migrate import upgrade

    if kind == "postgresql":
        with scratch_database() as url:
            upgrade(url)
            yield url
        return
    url = f"sqlite:///{Path(directory) / 'bench.db'}"
    upgrade(url)
    yield url

"""Shared fixtures. Integration tests use real PostgreSQL, Redis and Celery worker processes.

URLs come from the environment (defaults match the CI machine):
  ATELIER_TEST_POSTGRES_URL  server to create a throw-away database on
  ATELIER_TEST_REDIS_URL     Redis server; each stack uses its own database number
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from shared.auth import create_api_key, create_tenant
from shared.config import GatewaySettings, WorkerSettings
from shared.db.migrate import upgrade
from shared.db.scratch import DEFAULT_SERVER, scratch_database
from shared.db.session import session_scope

ROOT = Path(__file__).resolve().parent.parent
PG_SERVER = DEFAULT_SERVER
REDIS_SERVER = os.environ.get("ATELIER_TEST_REDIS_URL", "redis://127.0.0.1:6379")
MODELS_DIR = Path(os.environ.get("ATELIER_MODELS_DIR", ROOT / "var" / "models"))


def scratch_pg_database(prefix: str) -> AbstractContextManager[str]:
    """A throw-away PostgreSQL database on the test server, dropped afterwards."""
    return scratch_database(PG_SERVER, prefix=prefix)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with scratch_pg_database("atelier_test") as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'atelier.db'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The bundled serving models, built once (``make test`` builds them before pytest)."""
    from workers.training.build import image_tagger, text_embedder

    for builder in (image_tagger, text_embedder):
        builder.build(MODELS_DIR, log=lambda _m: None)
    return MODELS_DIR


@dataclass
class Stack:
    """One backend configuration: a database, a Redis database, a blob directory."""

    name: str
    db_url: str
    redis_url: str
    storage_dir: Path
    models_dir: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            ATELIER_ENVIRONMENT="test",
            ATELIER_DATABASE_URL=self.db_url,
            ATELIER_REDIS_URL=self.redis_url,
            ATELIER_STORAGE_URL=f"file://{self.storage_dir}",
            ATELIER_MODELS_DIR=str(self.models_dir),
            # Webhook tests deliver to a receiver on loopback, which workers refuse otherwise.
            ATELIER_WEBHOOK_ALLOW_PRIVATE_TARGETS="true",
            # Training takes every core by default; test stacks share two cores with each
            # other, and torch's threads spinning against busy cores would slow it tenfold.
            ATELIER_TRAINING_THREADS="1",
            ATELIER_TRAIN_THREADS="1",
            PYTHONUNBUFFERED="1",
        )
        env.pop("REDIS_URL", None)
        env.pop("DATABASE_URL", None)
        env.update(extra)
        return env

    def _values(self, overrides: dict[str, object]) -> dict[str, object]:
        return {
            "environment": "test",
            "database_url": self.db_url,
            "redis_url": self.redis_url,
            "storage_url": f"file://{self.storage_dir}",
            "models_dir": self.models_dir,
            **overrides,
        }

    def gateway_settings(self, **overrides: object) -> GatewaySettings:
        return GatewaySettings(**self._values(overrides))  # type: ignore[arg-type]

    def worker_settings(self, **overrides: object) -> WorkerSettings:
        return WorkerSettings(**self._values(overrides))  # type: ignore[arg-type]

    def new_key(self, scopes: tuple[str, ...] = ("read", "write")) -> tuple[str, str]:
        """A fresh tenant per test keeps tests independent of each other's rows."""
        with session_scope(GatewaySettings(database_url=self.db_url).sqlalchemy_url) as s:
            tenant = create_tenant(s, name=f"t-{uuid.uuid4().hex[:12]}")
            _, key = create_api_key(s, tenant_id=tenant.id, scopes=list(scopes))
            return tenant.id, key


BUNDLED_MODELS = (
    "image_tagger",
    "image_tagger_int8",
    "text_embedder",
    "text_embedder_int8",
    "text_generator",
    "image_generator",
)
_REDIS_DB = {"sqlite": 14, "postgresql": 15}


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Stack:
    db_url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    redis_url = f"{REDIS_SERVER}/{_REDIS_DB[request.param]}"
    redis.Redis.from_url(redis_url).flushdb()
    # Tenant models trained by tests go to a private directory; the bundled ones are linked in.
    private_models = tmp_path_factory.mktemp(f"models-{request.param}")
    for name in BUNDLED_MODELS:
        if (models_dir / name).is_dir():
            (private_models / name).symlink_to((models_dir / name).resolve())
    return Stack(
        name=request.param,
        db_url=db_url,
        redis_url=redis_url,
        storage_dir=tmp_path_factory.mktemp(f"blobs-{request.param}"),
        models_dir=private_models,
    )


class WorkerProcess:
    def __init__(self, stack: Stack, queues: str, log_path: Path):
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
             "-Q", queues, "-c", "1", "-n", f"test-{uuid.uuid4().hex[:6]}@%h",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO"],
            env=stack.env(), cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if b" ready." in log_path.read_bytes():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"celery worker did not start:\n{log_path.read_text()[-3000:]}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="session")
def worker(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """A real Celery worker process consuming every queue of this stack from real Redis."""
    log = tmp_path_factory.mktemp("worker") / f"worker-{stack.name}.log"
    proc = WorkerProcess(stack, "tagging,generation,training", log)
    yield proc
    proc.stop()

"""Faults under a running gateway and real worker processes (issue 16), each ending in a check of
what the database holds: a worker SIGKILLed in the middle of tagging, a corrupt model file.

Each test owns a redis-server on a free port, a models directory and a blob directory; the
database is the session's PostgreSQL one. docs/reliability.md says what happens on each fault.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data
from sqlalchemy import Connection, create_engine, func, select, text

from services.gateway.main import create_app
from shared.db.models import Asset, ContentItem, Job, JobStatus, Tag
from shared.db.session import session_scope
from shared.inference.manifest import (
    MANIFEST_NAME,
    publish_model_dir,
    read_manifest,
    write_manifest,
)
from shared.model_versions import set_active_version
from tests.conftest import Stack, WorkerProcess
from tests.helpers import auth, jpeg_bytes
from tests.integration.test_redis_faults import private_models, start_beat, stop_proc
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

# A killed worker's job is rescued once its row has been silent for the hard time limit plus
# the grace; small values keep that wait short. Tagging one photo takes well under a second.
FAST_RESCUE = {
    "ATELIER_TASK_TIME_LIMIT_S": "30",
    "ATELIER_TASK_SOFT_TIME_LIMIT_S": "25",
    "ATELIER_LOST_WORKER_GRACE_S": "1",
    "ATELIER_SWEEP_INTERVAL_S": "1",
}


@dataclass
class FaultStack(Stack):
    """A stack whose processes (workers, beat) all get ``extra`` in their environment."""

    extra: dict[str, str] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        return super().env(**{**self.extra, **extra})

    def url(self) -> str:
        return self.gateway_settings().sqlalchemy_url


@pytest.fixture
def fault_stack(pg_url: str, models_dir: Path, tmp_path: Path) -> Iterator[FaultStack]:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    try:
        yield FaultStack(
            name="faults",
            db_url=pg_url,
            redis_url=server.url,
            storage_dir=tmp_path / "blobs",
            models_dir=private_models(models_dir, tmp_path / "models"),
            extra=dict(FAST_RESCUE),
        )
    finally:
        server.stop()


def photo(name: str = "astronaut") -> bytes:
    return jpeg_bytes(Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB"))


def wait_for(what: str, check: Any, timeout: float = 180, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)
    return found


def kill_worker(worker: WorkerProcess) -> None:
    """SIGKILL the worker's main process and its pool children at once: no shutdown runs."""
    pid = worker.proc.pid
    for p in [pid, *_children(pid)]:
        os.kill(p, signal.SIGKILL)
    worker.proc.wait(timeout=20)
    worker.stop()  # closes its log


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc/*/stat: field 4 is the parent's id)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def jobs_of(stack: Stack, tenant_id: str) -> list[Job]:
    with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
        jobs = list(s.scalars(select(Job).where(Job.tenant_id == tenant_id)))
        s.expunge_all()
    return jobs


def final(stack: Stack, tenant_id: str) -> list[Job] | None:
    jobs = jobs_of(stack, tenant_id)
    done = jobs and all(j.status in (JobStatus.succeeded, JobStatus.failed) for j in jobs)
    return jobs if done else None


def lock_waiters(conn: Connection) -> int:
    """Backends of this database waiting for a row lock (our worker, blocked mid-tagging)."""
    return int(
        conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    )


def test_worker_killed_mid_tagging_the_item_is_tagged_once_by_the_next(
    fault_stack: FaultStack, tmp_path: Path
) -> None:
    stack = fault_stack
    tenant_id, key = stack.new_key()
    with TestClient(create_app(stack.gateway_settings())) as client:
        r = client.post(
            "/v1/content", headers=auth(key), files={"file": ("a.jpg", photo(), "image/jpeg")}
        )
        assert r.status_code == 202, r.text
    item_id, job_id = r.json()["id"], r.json()["job_id"]

    # The item's row locked by this test: the worker claims the job, then blocks on its first
    # write to the item, mid-tagging, for as long as the test wants.
    engine = create_engine(stack.url())
    locker = engine.connect()
    watcher = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        locker.execute(
            text("SELECT id FROM content_items WHERE id = :id FOR UPDATE"), {"id": item_id}
        )
        doomed = WorkerProcess(stack, "tagging", tmp_path / "doomed.log")
        wait_for("the worker to block mid-job", lambda: lock_waiters(watcher) > 0)
        [job] = jobs_of(stack, tenant_id)
        assert (job.status, job.attempts) == (JobStatus.running, 1)
        kill_worker(doomed)
        locker.rollback()  # the dead worker's transaction is never committed
        wait_for("the dead worker's backend to go", lambda: lock_waiters(watcher) == 0)
    finally:
        locker.close()
        watcher.close()
        engine.dispose()

    # A new worker and the sweeper: the job was silent past its time limit, so it is queued
    # again and done by the new worker. Its first message stays unacknowledged in Redis.
    beat = start_beat(stack, tmp_path)
    survivor = WorkerProcess(stack, "tagging", tmp_path / "survivor.log")
    try:
        jobs = wait_for("the job to end", lambda: final(stack, tenant_id), timeout=240)
    finally:
        stop_proc(beat)
        survivor.stop()
    assert [(j.id, j.status, j.attempts) for j in jobs] == [(job_id, JobStatus.succeeded, 2)], [
        j.error for j in jobs
    ]
    assert " succeeded in " in (tmp_path / "survivor.log").read_text()
    with session_scope(stack.url()) as s:
        item = s.get(ContentItem, item_id)
        assert item is not None and item.status == "ready"
        tags = s.execute(select(Tag.name, Tag.source).where(Tag.content_id == item_id)).all()
        assert tags and len(tags) == len(set(tags)), "a tag was stored twice"
        roles = s.scalars(select(Asset.role).where(Asset.content_id == item_id)).all()
        assert sorted(roles) == sorted(set(roles)) and {"original", "thumbnail"} <= set(roles)
        n = s.scalar(select(func.count()).select_from(Job).where(Job.content_id == item_id))
        assert n == 1


GOOD = "effnet-lite0-1"  # the bundled image tagger's version
BROKEN = "effnet-lite0-9"  # a newer version of it, truncated after publication


def _corrupt_newer_tagger(models: Path) -> Path:
    """``image_tagger`` with one version, newer than the bundled one, whose model.onnx is cut
    in half after publication (its manifest still has the whole file's hash)."""
    bundled = (models / "image_tagger").resolve() / GOOD
    (models / "image_tagger").unlink()
    with publish_model_dir(models, "image_tagger", BROKEN) as tmp:
        for f in bundled.iterdir():
            if f.name != MANIFEST_NAME:
                shutil.copy(f, tmp / f.name)
        write_manifest(tmp, read_manifest(bundled).model_copy(update={"version": BROKEN}))
    onnx = models / "image_tagger" / BROKEN / "model.onnx"
    with onnx.open("r+b") as cut:
        cut.truncate(onnx.stat().st_size // 2)
    set_active_version(models, "image_tagger", BROKEN)
    return bundled


def _upload(client: TestClient, key: str, **kwargs: Any) -> dict[str, Any]:
    r = client.post("/v1/content", headers=auth(key), **kwargs)
    assert r.status_code == 202, r.text
    return dict(r.json())


def test_corrupt_model_fails_jobs_clearly_then_the_previous_version_serves(
    fault_stack: FaultStack, tmp_path: Path
) -> None:
    stack = fault_stack
    bundled = _corrupt_newer_tagger(stack.models_dir)
    tenant_id, key = stack.new_key()
    worker = WorkerProcess(stack, "tagging", tmp_path / "worker.log")
    pid = worker.proc.pid
    try:
        with TestClient(create_app(stack.gateway_settings())) as client:
            ready = client.get("/readyz")
            assert ready.status_code == 503, ready.text
            check = ready.json()["checks"]["model:image_tagger"]
            assert check.startswith("error") and f"image_tagger/{BROKEN}" in check, check
            assert "model.onnx is corrupt" in check, check

            # No older version: image jobs fail with the reason; text jobs go on.
            image = _upload(client, key, files={"file": ("a.jpg", photo(), "image/jpeg")})
            words = _upload(client, key, json={"text": "a red bicycle by the river"})
            jobs = {j.id: j for j in wait_for("jobs", lambda: final(stack, tenant_id))}
            failed = jobs[image["job_id"]]
            assert (failed.status, failed.attempts) == (JobStatus.failed, 1)
            assert failed.error and "model.onnx is corrupt" in failed.error, failed.error
            assert f"image_tagger/{BROKEN}" in failed.error, failed.error
            assert jobs[words["job_id"]].status == JobStatus.succeeded

            # An older good version appears: it serves, and /readyz says so.
            shutil.copytree(bundled, stack.models_dir / "image_tagger" / GOOD)
            ready = client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
            check = ready.json()["checks"]["model:image_tagger"]
            assert check.startswith(f"degraded: serving image_tagger {GOOD}") and BROKEN in check
            again = _upload(client, key, files={"file": ("b.jpg", photo("coffee"), "image/jpeg")})
            wait_for("the second image", lambda: final(stack, tenant_id))
        assert worker.alive() and worker.proc.pid == pid  # the worker never went down
    finally:
        worker.stop()
    with session_scope(stack.url()) as s:
        assert s.get(Job, again["job_id"]).status == JobStatus.succeeded  # type: ignore[union-attr]
        states = dict(
            s.execute(
                select(ContentItem.id, ContentItem.status).where(ContentItem.tenant_id == tenant_id)
            ).all()
        )
        assert states == {image["id"]: "failed", words["id"]: "ready", again["id"]: "ready"}
        sources = set(s.scalars(select(Tag.source).where(Tag.content_id == again["id"])))
        assert f"image_tagger:{GOOD}" in sources and not any(BROKEN in x for x in sources)
        assert not s.scalars(select(Tag.name).where(Tag.content_id == image["id"])).all()

"""Redis paused, stopped or killed under a running gateway and worker: no upload is lost.

Each test owns a redis-server on a free port (the shared test Redis must not be paused), a
PostgreSQL database, a Celery worker and beat running the sweeper every second.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.gateway.main import create_app
from shared.db.models import ContentItem, Job, JobStatus, Tag
from shared.db.session import session_scope
from shared.jobs import new_job, sweep
from shared.queue import create_celery
from suite.supervisor import Supervisor, redis_reachable
from tests.conftest import BUNDLED_MODELS, ROOT, Stack, WorkerProcess
from tests.helpers import auth
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

# Generous: a stalled publish costs a few broker_timeout_s (1 s here), never more.
ANSWER_BOUND_S = 10.0
UPLOADS = 6


def private_models(models_dir: Path, into: Path) -> Path:
    into.mkdir()
    for name in BUNDLED_MODELS:
        if (models_dir / name).is_dir():
            (into / name).symlink_to((models_dir / name).resolve())
    return into


def start_beat(stack: Stack, tmp_path: Path) -> subprocess.Popen[bytes]:
    log = (tmp_path / "beat.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat", "-l", "INFO",
         "-s", str(tmp_path / "beat-schedule")],
        env=stack.env(ATELIER_SWEEP_INTERVAL_S="1"), cwd=ROOT, stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip


def stop_proc(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def faults(
    pg_url: str, models_dir: Path, tmp_path: Path
) -> Iterator[tuple[RedisServer, Stack, WorkerProcess]]:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    stack = Stack(
        name="faults",
        db_url=pg_url,
        redis_url=server.url,
        storage_dir=tmp_path / "blobs",
        models_dir=private_models(models_dir, tmp_path / "models"),
    )
    worker = WorkerProcess(stack, "tagging", tmp_path / "worker.log")
    beat = start_beat(stack, tmp_path)
    try:
        yield server, stack, worker
    finally:
        stop_proc(beat)
        worker.stop()
        server.stop()


def _upload(client: TestClient, key: str, i: int) -> tuple[int, float, dict[str, Any]]:
    t0 = time.monotonic()
    r = client.post(
        "/v1/content",
        headers=auth(key),
        json={"external_id": f"item-{i}", "text": f"a red bicycle by the river, number {i}"},
    )
    return r.status_code, time.monotonic() - t0, r.json()


def _wait_all_final(stack: Stack, tenant_id: str, timeout: float = 180) -> list[Job]:
    deadline = time.monotonic() + timeout
    while True:
        with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
            jobs = list(s.scalars(select(Job).where(Job.tenant_id == tenant_id)))
            s.expunge_all()
        if jobs and all(j.status in (JobStatus.succeeded, JobStatus.failed) for j in jobs):
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError([(j.id, j.status, j.published_at) for j in jobs])
        time.sleep(0.5)


def _assert_each_tagged_once(stack: Stack, tenant_id: str, item_ids: list[str]) -> None:
    jobs = _wait_all_final(stack, tenant_id)
    assert len(jobs) == len(item_ids), "one job per accepted upload, no duplicate rows"
    assert {j.content_id for j in jobs} == set(item_ids)
    # attempts counts claims: 1 means one run, whatever duplicate messages were delivered.
    assert [(j.status, j.attempts) for j in jobs] == [(JobStatus.succeeded, 1)] * len(jobs)
    with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
        for item_id in item_ids:
            item = s.get(ContentItem, item_id)
            assert item is not None and item.status == "ready"
            names = s.scalars(select(Tag.name).where(Tag.content_id == item_id)).all()
            assert names and len(names) == len(set(names))


def test_stalled_redis_answers_uploads_and_readyz_in_bounded_time(
    faults: tuple[RedisServer, Stack, WorkerProcess],
) -> None:
    server, stack, worker = faults
    tenant_id, key = stack.new_key()
    settings = stack.gateway_settings(broker_timeout_s=1.0, readyz_timeout_s=4.0)
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        server.signal(signal.SIGSTOP)  # Redis paused: connections accepted, never answered
        try:
            with ThreadPoolExecutor(UPLOADS + 1) as pool:
                uploads = [pool.submit(_upload, client, key, i) for i in range(UPLOADS)]
                t0 = time.monotonic()
                ready = pool.submit(client.get, "/readyz").result()
                ready_s = time.monotonic() - t0
                answers = [f.result() for f in uploads]
        finally:
            server.signal(signal.SIGCONT)
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["redis"].startswith("error"), ready.json()
        assert ready_s < ANSWER_BOUND_S
        for status, took, body in answers:
            assert status == 202, body
            assert took < ANSWER_BOUND_S, took
        _assert_each_tagged_once(stack, tenant_id, [b["id"] for _, _, b in answers])
        assert client.get("/readyz").status_code == 200
    assert worker.alive()


def test_stopped_redis_uploads_are_accepted_and_done_after_it_returns(
    faults: tuple[RedisServer, Stack, WorkerProcess],
) -> None:
    server, stack, worker = faults
    tenant_id, key = stack.new_key()
    worker_pid = worker.proc.pid
    with TestClient(create_app(stack.gateway_settings(broker_timeout_s=1.0))) as client:
        server.stop()
        answers = [_upload(client, key, i) for i in range(UPLOADS)]
        ready = client.get("/readyz")
        server.start()
        for status, _, body in answers:
            assert status in (202, 503), body  # never a 500
        assert ready.status_code == 503 and "redis" in ready.json()["checks"]
        accepted = [b["id"] for status, _, b in answers if status == 202]
        assert accepted
        # The same worker process (no restart) and the sweeper finish every accepted job.
        _assert_each_tagged_once(stack, tenant_id, accepted)
    assert worker.alive() and worker.proc.pid == worker_pid


def test_supervisor_restarts_its_private_redis_and_jobs_resume(
    pg_url: str,
    models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("ATELIER_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    sup = Supervisor(var_dir=tmp_path / "var", build_models=False, beat=False)
    sup.var_dir.mkdir()
    url = sup.start_redis(dict(os.environ))
    sup.db_url = Stack("sup", pg_url, url, tmp_path, tmp_path).gateway_settings().sqlalchemy_url
    stack = Stack(
        name="supervised",
        db_url=pg_url,
        redis_url=url,
        storage_dir=tmp_path / "blobs",
        models_dir=private_models(models_dir, tmp_path / "models"),
    )
    worker = WorkerProcess(stack, "tagging", tmp_path / "worker.log")
    try:
        tenant_id, key = stack.new_key()
        # A job whose message was in Redis when it died: published, still queued.
        with session_scope(sup.db_url) as s:
            item = ContentItem(
                tenant_id=tenant_id, kind="text", external_id=f"lost-{uuid.uuid4().hex[:6]}",
                text="a message lost with the broker", assets=[], tags=[],
            )  # fmt: skip
            s.add(item)
            s.flush()
            lost = new_job(s, tenant_id=tenant_id, job_type="tag_content", content_id=item.id)
            lost.published_at = lost.created_at
            s.commit()
            lost_id, lost_item = lost.id, item.id
        assert sup.redis_proc is not None
        sup.redis_proc.kill()
        sup.redis_proc.wait()
        deadline = time.monotonic() + 60
        while not redis_reachable(url, 0.5):
            assert time.monotonic() < deadline, capsys.readouterr().out
            sup.tend_redis()
            time.sleep(0.2)
        out = capsys.readouterr().out
        assert "private Redis exited" in out and f"restarted private Redis at {url}" in out
        assert sup.redis_restarts == 1
        with session_scope(sup.db_url) as s:
            job = s.get(Job, lost_id)
            assert job is not None and job.status == JobStatus.queued
            assert job.published_at is None  # handed back to the sweeper
        with TestClient(create_app(stack.gateway_settings())) as client:
            r = client.post("/v1/content", headers=auth(key), json={"text": "after the restart"})
            assert r.status_code == 202, r.text
            # What beat's sweep would do next: publish the job whose message was lost.
            with session_scope(sup.db_url) as s:
                counts = sweep(
                    s,
                    create_celery(stack.worker_settings()),
                    requeue_after=timedelta(minutes=15),
                    stale_after={"tagging": timedelta(minutes=10)},
                    publish_grace=timedelta(0),
                )
            assert counts["republished"] >= 1
            _assert_each_tagged_once(stack, tenant_id, [lost_item, r.json()["id"]])
        with session_scope(sup.db_url) as s:
            n = s.scalar(select(func.count()).select_from(Job).where(Job.tenant_id == tenant_id))
        assert n == 2
        assert worker.alive()
    finally:
        worker.stop()
        sup.stop()

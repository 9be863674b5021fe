"""The hostile files corpus (tests/hostile_corpus.py) against a gateway and a real worker.

Each file gets a clear 4xx at upload, or 202 and a job that ends succeeded or failed with a
readable reason; afterwards the worker is still up, tags the next valid upload, and its memory
stayed bounded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from skimage import data
from sqlalchemy import select

from services.gateway.main import create_app
from shared.db.models import Job
from shared.db.session import session_scope
from tests.conftest import Stack, WorkerProcess
from tests.helpers import auth, jpeg_bytes, wait_job
from tests.hostile_corpus import CASES, Case, generate

pytestmark = pytest.mark.integration

# Generous: the worker holds two ONNX models; a decoded bomb alone would be gigabytes.
WORKER_RSS_LIMIT_MB = 1500


@pytest.fixture(scope="module")
def corpus() -> dict[str, Path]:
    return generate()


@pytest.fixture
def pg_worker(stack: Stack, request: pytest.FixtureRequest) -> WorkerProcess:
    # The decoders do not depend on the database: one backend keeps the corpus run short.
    if stack.name != "postgresql":
        pytest.skip("the corpus runs on PostgreSQL only")
    worker: WorkerProcess = request.getfixturevalue("worker")
    return worker


@pytest.fixture
def client(stack: Stack, pg_worker: WorkerProcess) -> Iterator[TestClient]:
    with TestClient(create_app(stack.gateway_settings())) as c:
        yield c


def _rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (Celery's prefork pool), in MB."""
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        status = Path(f"/proc/{p}/status")
        if not status.exists():
            continue
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


def _upload(client: TestClient, key: str, case: Case, payload: bytes):  # type: ignore[no-untyped-def]
    fields = {"external_id": f"hostile-{case.name}", "title": case.name}
    if case.field == "file":
        return client.post(
            "/v1/content",
            headers=auth(key),
            files={"file": (case.name, payload, case.mime)},
            data=fields,
        )
    return client.post(
        "/v1/content",
        headers=auth(key),
        files={"text": (None, payload, "text/plain")},
        data=fields,
    )


def test_hostile_files_get_clear_answers_and_the_worker_survives(
    client: TestClient, stack: Stack, pg_worker: WorkerProcess, corpus: dict[str, Path]
) -> None:
    tenant_id, key = stack.new_key()
    outcomes: dict[str, str] = {}
    for case in CASES:
        r = _upload(client, key, case, corpus[case.name].read_bytes())
        assert r.status_code in case.statuses, (case.name, r.status_code, r.text[:500])
        if r.status_code != 202:
            error = r.json()["error"]
            assert error["message"] and isinstance(error["message"], str), (case.name, error)
            outcomes[case.name] = f"{r.status_code} {error['code']}"
            continue
        job = wait_job(client, key, r.json()["job_id"], timeout=120)
        assert job["status"] in ("succeeded", "failed"), (case.name, job)
        if job["status"] == "failed":
            # A reason a person can act on, not a traceback.
            assert job["error"] and not job["error"].startswith("internal error"), (case.name, job)
        outcomes[case.name] = f"202 {job['status']}"
        item = client.get(f"/v1/content/{r.json()['id']}", headers=auth(key)).json()
        original = next((a for a in item["assets"] if a["role"] == "original"), {})
        if case.name == "png-named.jpg":  # the bytes decide the type, not the name
            assert original["mime_type"] == "image/png"
        if case.name == "orientation-6.jpg":  # stored as displayed: rotated a quarter turn
            assert (original["width"], original["height"]) == (240, 320)
        if case.name == "polyglot-jpeg-zip.jpg":
            served = client.get(original["url"], headers=auth(key))
            assert served.headers["content-type"] == "image/jpeg"
            assert served.headers["x-content-type-options"] == "nosniff"
    assert pg_worker.alive(), outcomes

    # The worker still tags a valid upload after the whole corpus.
    r = client.post(
        "/v1/content",
        headers=auth(key),
        files={"file": ("chelsea.jpg", jpeg_bytes(data.chelsea()), "image/jpeg")},
        data={"external_id": "after-the-corpus"},
    )
    assert r.status_code == 202, r.text
    assert wait_job(client, key, r.json()["job_id"])["status"] == "succeeded"
    item = client.get(f"/v1/content/{r.json()['id']}", headers=auth(key)).json()
    assert item["status"] == "ready" and item["tags"]
    rss = _rss_mb(pg_worker.proc.pid)
    assert 0 < rss < WORKER_RSS_LIMIT_MB, (rss, outcomes)

    # What the database holds: one job per accepted file, none left running or queued.
    with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
        jobs = s.scalars(select(Job).where(Job.tenant_id == tenant_id)).all()
        assert jobs and all(j.status in ("succeeded", "failed") for j in jobs)
        accepted = sum(o.startswith("202") for o in outcomes.values()) + 1
        assert len(jobs) == accepted, outcomes
    print(os.linesep.join(f"{k}: {v}" for k, v in outcomes.items()))

"""A training job whose worker process is killed mid-run resumes from its last checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from services.gateway.main import create_app
from tests.conftest import REDIS_SERVER, Stack, WorkerProcess
from tests.helpers import auth, wait_job

pytestmark = pytest.mark.integration


@pytest.fixture
def own_stack(stack: Stack) -> Stack:
    # A Redis database of its own, so only the worker this test kills sees its messages.
    url = f"{REDIS_SERVER}/10"
    redis.Redis.from_url(url).flushdb()
    return Stack(stack.name, stack.db_url, url, stack.storage_dir, stack.models_dir)


@pytest.fixture
def training_worker(own_stack: Stack, tmp_path) -> Iterator[WorkerProcess]:  # type: ignore[no-untyped-def]
    proc = WorkerProcess(own_stack, "training", tmp_path / "training-worker.log")
    yield proc
    proc.stop()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_killed_worker_resumes_training_from_checkpoint(
    own_stack: Stack, training_worker: WorkerProcess
) -> None:
    from workers.training.build.text_generator import load_fortunes

    corpus = "\n\n".join(load_fortunes(limit=400))  # ~50 kB of real text
    _, key = own_stack.new_key()
    with TestClient(create_app(own_stack.gateway_settings())) as client:
        r = client.post(
            "/v1/generators/text:train",
            headers=auth(key),
            json={"corpus": corpus, "epochs": 12, "hidden": 96, "layers": 1},
        )
        job_id = r.json()["job_id"]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            job = client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json()
            event = (job.get("result") or {}).get("last_event") or {}
            if event.get("event") == "epoch" and event.get("epoch", 0) >= 2:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"training never reached epoch 2: {job}")
        children = _children(training_worker.proc.pid)
        assert children, "the prefork pool has a child process running the task"
        for pid in children:
            os.kill(pid, signal.SIGKILL)

        job = wait_job(client, key, job_id, timeout=240)
        assert job["status"] == "succeeded", (job, training_worker.log_path.read_text()[-2000:])
        assert job["attempts"] == 2
        assert job["result"]["resumed_from_step"] > 0
        assert training_worker.alive()

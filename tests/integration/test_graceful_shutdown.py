"""SIGTERM to a worker during training: the job goes back to the queue at a checkpoint, not to
failed, and the next worker resumes it; logs are JSON lines carrying the request id."""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from fastapi.testclient import TestClient

from services.gateway.main import create_app
from tests.conftest import REDIS_SERVER, Stack, WorkerProcess
from tests.helpers import auth, wait_job

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ObservedStack(Stack):
    """Workers of this stack log JSON and serve metrics on ``metrics_port``."""

    metrics_port: int = 0

    def env(self, **extra: str) -> dict[str, str]:
        return super().env(
            ATELIER_LOG_FORMAT="json", ATELIER_METRICS_PORT=str(self.metrics_port), **extra
        )


@pytest.fixture
def own_stack(stack: Stack) -> ObservedStack:
    if stack.name == "sqlite":
        # Minutes of training per run: the shutdown path is the same on either database.
        pytest.skip("runs on PostgreSQL only")
    # A Redis database of its own, so only this test's workers see its messages.
    url = f"{REDIS_SERVER}/11"
    redis.Redis.from_url(url).flushdb()
    return ObservedStack(
        stack.name, stack.db_url, url, stack.storage_dir, stack.models_dir, _free_port()
    )


@pytest.fixture
def workers(tmp_path) -> Iterator[list[WorkerProcess]]:  # type: ignore[no-untyped-def]
    started: list[WorkerProcess] = []
    yield started
    for proc in started:
        proc.stop()


def _task_lines(log: str, job_id: str) -> list[dict[str, object]]:
    lines = []
    for line in log.splitlines():
        if line.startswith("{") and job_id in line:
            record = json.loads(line)
            if record.get("logger") == "atelier.task":
                lines.append(record)
    return lines


def test_sigterm_requeues_training_and_the_next_worker_resumes(
    own_stack: ObservedStack, workers: list[WorkerProcess], tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from workers.training.build.text_generator import load_fortunes

    first = WorkerProcess(own_stack, "training", tmp_path / "first.log")
    workers.append(first)
    corpus = "\n\n".join(load_fortunes(limit=400))
    _, key = own_stack.new_key()
    with TestClient(create_app(own_stack.gateway_settings())) as client:
        r = client.post(
            "/v1/generators/text:train",
            headers={**auth(key), "X-Request-ID": "shutdown-test-1"},
            json={"corpus": corpus, "epochs": 8, "hidden": 96, "layers": 1},
        )
        assert r.headers["x-request-id"] == "shutdown-test-1"
        job_id = r.json()["job_id"]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            job = client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json()
            event = (job.get("result") or {}).get("last_event") or {}
            if event.get("event") == "epoch" and event.get("epoch", 0) >= 1:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"training never reached epoch 1: {job}")

        # As Kubernetes and Docker do: SIGTERM to the main process only.
        first.proc.send_signal(signal.SIGTERM)
        first.proc.wait(timeout=120)
        log = first.log_path.read_text()
        job = client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json()
        assert job["status"] == "queued", (job, log[-3000:])
        lines = _task_lines(log, job_id)
        assert lines and lines[-1]["state"] == "queued", log[-3000:]
        assert lines[-1]["request_id"] == "shutdown-test-1"
        assert lines[-1]["type"] == "train_text_generator"

        second = WorkerProcess(own_stack, "training", tmp_path / "second.log")
        workers.append(second)
        job = wait_job(client, key, job_id, timeout=300)
        assert job["status"] == "succeeded", (job, second.log_path.read_text()[-3000:])
        assert job["attempts"] == 2
        assert job["result"]["resumed_from_step"] > 0

        # The pool's counts, summed by the main process's metrics server.
        url = f"http://127.0.0.1:{own_stack.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        assert 'atelier_jobs_finished_total{state="succeeded",type="train_text_generator"}' in text

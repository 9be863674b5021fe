"""First start: the suite builds its bundled generators as system jobs, and the generation
endpoints answer 503 `model_not_ready` (naming the job) until the first version exists."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from services.gateway.main import create_app
from shared.bundled import BUILD_JOB, describe, ensure_builds
from shared.db.models import Job, JobStatus
from shared.db.scratch import scratch_url
from shared.db.session import session_scope
from shared.jobs import claim, finish
from shared.queue import create_celery
from suite.cli import app as cli
from tests.conftest import REDIS_SERVER, Stack, WorkerProcess
from tests.helpers import auth, wait_job

pytestmark = pytest.mark.integration

# Builds that take seconds: a slice of the real data, one short pass, small networks.
TINY: dict[str, dict[str, Any]] = {
    "text_generator": {
        "limit": 40,  # fortunes per file
        "epochs": 1,
        "config": {"embed": 16, "hidden": 32, "layers": 1, "seq_len": 32, "batch_size": 16},
    },
    "image_generator": {
        "limit": 24,
        "steps": 4,
        "config": {"ngf": 8, "ndf": 8, "batch_size": 8, "fid_samples": 16},
    },
}
# Redis databases of their own, so no other test module's worker takes these build messages.
_REDIS_DB = {"sqlite": 8, "postgresql": 9}


@pytest.fixture
def bare(stack: Stack, tmp_path: Path) -> Iterator[Stack]:
    """A fresh database (no build jobs of other tests) and a models directory holding the
    taggers but no generator: the state of a first start."""
    models = tmp_path / "models"
    models.mkdir()
    for name in ("image_tagger", "text_embedder"):
        (models / name).symlink_to((stack.models_dir / name).resolve())
    with scratch_url(stack.name, tmp_path) as db_url:  # type: ignore[arg-type]
        own = dataclasses.replace(
            stack,
            db_url=db_url,
            redis_url=f"{REDIS_SERVER}/{_REDIS_DB[stack.name]}",
            storage_dir=tmp_path / "blobs",
            models_dir=models,
        )
        redis.Redis.from_url(own.redis_url).flushdb()
        yield own


def _ensure(stack: Stack, **kwargs: Any) -> dict[str, str]:
    settings = stack.worker_settings()
    with session_scope(settings.sqlalchemy_url) as s:
        jobs = ensure_builds(s, create_celery(settings), stack.models_dir, params=TINY, **kwargs)
        return {model: job.id for model, job in jobs.items()}


def _build_jobs(stack: Stack) -> list[Job]:
    with session_scope(stack.worker_settings().sqlalchemy_url) as s:
        return list(s.scalars(select(Job).where(Job.type == BUILD_JOB)).all())


def test_generation_answers_model_not_ready_while_the_build_is_pending(bare: Stack) -> None:
    jobs = _ensure(bare)
    assert set(jobs) == {"text_generator", "image_generator"}
    _, key = bare.new_key()
    with TestClient(create_app(bare.gateway_settings())) as client:
        for path, body, model in (
            ("/v1/generate/text", {"prompt": "x"}, "text_generator"),
            ("/v1/generate/images", {"n": 1, "seed": 1}, "image_generator"),
            ("/v1/generate/images:interpolate", {"seed_a": 1, "seed_b": 2, "steps": 2},
             "image_generator"),
        ):  # fmt: skip
            r = client.post(path, headers=auth(key), json=body)
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"]
            error = r.json()["error"]
            assert error["code"] == "model_not_ready"
            assert error["details"] == {
                "job_id": jobs[model], "model": model, "status": "queued", "stage": None,
                "progress": 0.0,
            }  # fmt: skip
        # An explicitly requested version that does not exist stays a 404.
        r = client.post(
            "/v1/generate/text", headers=auth(key), json={"prompt": "x", "model_version": "9"}
        )
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_unavailable"
        # Any tenant may follow the build the 503 points to; no tenant may cancel it.
        job = client.get(f"/v1/jobs/{jobs['text_generator']}", headers=auth(key))
        assert job.status_code == 200 and job.json()["type"] == BUILD_JOB
        r = client.post(f"/v1/jobs/{jobs['text_generator']}:cancel", headers=auth(key))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"

        # `atelier status` shows the same from a terminal.
        out = CliRunner().invoke(cli, ["status"], env=bare.env()).output
        assert re.search(r"text_generator +not built", out), out
        assert (
            f"text generator: build queued for the build worker  [job {jobs['text_generator']}]"
            in out
        )

        # A failed build with nothing else under way: the model is unavailable, and says why.
        with session_scope(bare.worker_settings().sqlalchemy_url) as s:
            row = s.get(Job, jobs["text_generator"])
            assert row is not None
            finish(s, row, status=JobStatus.failed, error="no fortune files")
        r = client.post("/v1/generate/text", headers=auth(key), json={"prompt": "x"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_unavailable"
        assert r.json()["error"]["details"]["error"] == "no fortune files"


def test_a_build_already_queued_or_running_is_not_enqueued_again(bare: Stack) -> None:
    first = _ensure(bare)
    assert _ensure(bare) == first
    url = bare.worker_settings().sqlalchemy_url
    with session_scope(url) as s:
        assert claim(s, first["text_generator"], "task-1") is not None
    assert _ensure(bare) == first
    assert len(_build_jobs(bare)) == 2

    # `atelier run` starting again: the build its last run left running is queued again.
    assert _ensure(bare, restart=True) == first
    with session_scope(url) as s:
        row = s.get(Job, first["text_generator"])
        assert row is not None and row.status == JobStatus.queued and row.task_id is None
        # A failed build is retried by the next start; a built model is not rebuilt.
        finish(s, row, status=JobStatus.failed, error="worker lost")
    version = bare.models_dir / "image_generator" / "1"
    version.mkdir(parents=True)
    (version / "manifest.json").write_text(json.dumps({"name": "image_generator", "version": "1",
                                                       "kind": "image_generator"}))  # fmt: skip
    again = _ensure(bare)
    assert set(again) == {"text_generator"} and again["text_generator"] != first["text_generator"]
    with session_scope(url) as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.type == BUILD_JOB)) == 3


def test_a_tiny_build_job_publishes_the_generators_which_then_serve(
    bare: Stack, tmp_path: Path
) -> None:
    worker = WorkerProcess(bare, "builds,generation", tmp_path / "worker.log")
    try:
        _, key = bare.new_key()
        jobs = _ensure(bare)
        with TestClient(create_app(bare.gateway_settings())) as client:
            # Generous upper bounds only: a build of this size takes seconds.
            text = wait_job(client, key, jobs["text_generator"], timeout=300)
            assert text["status"] == "succeeded", (text, worker.log_path.read_text()[-3000:])
            assert text["progress"] == 1.0 and text["result"]["model"] == "text_generator:2"
            assert text["result"]["metrics"]["val_bpc"] > 0
            assert text["result"]["last_event"]["event"] == "epoch"
            r = client.post("/v1/generate/text?wait=60", headers=auth(key),
                            json={"prompt": "The ", "max_length": 20, "seed": 1})  # fmt: skip
            assert r.status_code == 200, r.text
            assert r.json()["result"]["model"] == "text_generator:2"

            image = wait_job(client, key, jobs["image_generator"], timeout=300)
            assert image["status"] == "succeeded", (image, worker.log_path.read_text()[-3000:])
            assert {"fid", "fid_uniform_noise"} <= set(image["result"]["metrics"])
            r = client.post("/v1/generate/images?wait=60", headers=auth(key),
                            json={"n": 2, "seed": 3})  # fmt: skip
            assert r.status_code == 200, r.text
            assert len(r.json()["result"]["content_ids"]) == 2
        with session_scope(bare.worker_settings().sqlalchemy_url) as s:
            row = s.get(Job, jobs["text_generator"])
            assert row is not None and describe(row).startswith("text generator: ready in ")
        # Nothing is left to build.
        assert _ensure(bare) == {}
    finally:
        worker.stop()

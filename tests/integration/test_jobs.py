"""Job lifecycle against a real database: tasks called as plain functions, as workers do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from skimage import data

from shared.db.models import Asset, ContentItem, Job, JobStatus
from shared.jobs import claim, new_job, sweep
from shared.queue import create_celery
from tests.conftest import Stack
from tests.helpers import jpeg_bytes
from workers.context import WorkerContext
from workers.jobs import JobFailed, execute, job_gave_up
from workers.tagging.tasks import tag_content_job

pytestmark = pytest.mark.integration


def _image_job(ctx: WorkerContext, tenant_id: str) -> str:
    blob = ctx.storage.put_bytes(jpeg_bytes(data.chelsea()))
    with ctx.session() as s:
        item = ContentItem(tenant_id=tenant_id, kind="image", assets=[], tags=[])
        item.assets.append(
            Asset(role="original", storage_key=blob.key, sha256=blob.sha256,
                  mime_type="image/jpeg", byte_size=blob.size)
        )  # fmt: skip
        s.add(item)
        s.flush()
        job = new_job(s, tenant_id=tenant_id, job_type="tag_content", content_id=item.id)
        s.commit()
        return job.id


def test_missing_model_fails_the_job_with_a_clear_error(stack: Stack, tmp_path: Path) -> None:
    tenant_id, _ = stack.new_key()
    ctx = WorkerContext(settings=stack.worker_settings(models_dir=tmp_path / "no-models"))
    job_id = _image_job(ctx, tenant_id)
    assert execute(ctx, job_id, tag_content_job) == JobStatus.failed
    with ctx.session() as s:
        job = s.get(Job, job_id)
        assert job is not None and "image_tagger" in (job.error or "")
        assert "make models" in (job.error or "")
        item = s.get(ContentItem, job.content_id)
        # The model-free work (size, thumbnail, pHash) was kept.
        assert item is not None and item.phash and item.status == "failed"
        assert {a.role for a in item.assets} == {"original", "thumbnail"}


def test_a_job_runs_once_however_often_it_is_delivered(stack: Stack) -> None:
    tenant_id, _ = stack.new_key()
    ctx = WorkerContext(settings=stack.worker_settings())
    job_id = _image_job(ctx, tenant_id)
    calls: list[str] = []

    def handler(ctx: WorkerContext, session, job: Job) -> dict:  # type: ignore[no-untyped-def]
        calls.append(job.id)
        return {"ok": True}

    assert execute(ctx, job_id, handler, task_id="t1") == JobStatus.succeeded
    assert execute(ctx, job_id, handler, task_id="t1") is None
    assert execute(ctx, job_id, handler, task_id="t2") is None
    assert calls == [job_id]


def test_redelivery_after_a_dead_worker_reclaims_but_a_duplicate_does_not(stack: Stack) -> None:
    tenant_id, _ = stack.new_key()
    ctx = WorkerContext(settings=stack.worker_settings())
    job_id = _image_job(ctx, tenant_id)
    with ctx.session() as s:
        assert claim(s, job_id, "first-delivery") is not None  # then the worker "dies"
        assert claim(s, job_id, "duplicate-publish") is None
        again = claim(s, job_id, "first-delivery")
        assert again is not None and again.attempts == 2


def test_handler_errors_end_in_the_job_row(stack: Stack) -> None:
    tenant_id, _ = stack.new_key()
    ctx = WorkerContext(settings=stack.worker_settings())
    job_id = _image_job(ctx, tenant_id)

    def broken(*_: object) -> dict:
        raise JobFailed("the input has no pixels")

    assert execute(ctx, job_id, broken) == JobStatus.failed
    with ctx.session() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.error == "the input has no pixels"
        assert job.finished_at is not None


def test_sweeper_rescues_silent_running_jobs_and_gives_up_eventually(stack: Stack) -> None:
    tenant_id, _ = stack.new_key()
    ctx = WorkerContext(settings=stack.worker_settings(redis_url="redis://127.0.0.1:1/0"))
    job_id = _image_job(ctx, tenant_id)
    celery = create_celery(ctx.settings)
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    with ctx.session() as s:
        claim(s, job_id, "lost")
        s.query(Job).filter(Job.id == job_id).update({"updated_at": long_ago})
        s.commit()
        counts = sweep(
            s, celery, requeue_after=timedelta(minutes=15),
            stale_after={"tagging": timedelta(minutes=5)},
        )  # fmt: skip
        job = s.get(Job, job_id)
        assert job is not None and job.status == JobStatus.queued and job.task_id is None
        assert counts["rescued"] == 0  # the broker is down: it stays queued, unpublished
        s.query(Job).filter(Job.id == job_id).update(
            {"status": JobStatus.running, "attempts": 3, "updated_at": long_ago}
        )
        s.commit()
        counts = sweep(
            s, celery, requeue_after=timedelta(minutes=15),
            stale_after={"tagging": timedelta(minutes=5)},
            on_failed=lambda j: job_gave_up(ctx, j),
        )  # fmt: skip
        s.refresh(job)
        assert counts["failed"] == 1 and job.status == JobStatus.failed
        assert "worker lost" in (job.error or "")
        # The item is not left "processing" forever: it says failed, as a handler failure would.
        item = s.get(ContentItem, job.content_id)
        assert item is not None and item.status == "failed"


def test_cancelled_before_start_never_runs(stack: Stack) -> None:
    tenant_id, _ = stack.new_key()
    ctx = WorkerContext(settings=stack.worker_settings())
    job_id = _image_job(ctx, tenant_id)
    with ctx.session() as s:
        s.query(Job).filter(Job.id == job_id).update({"cancel_requested": True})
        s.commit()
    assert execute(ctx, job_id, tag_content_job) is None
    with ctx.session() as s:
        assert s.get(Job, job_id).status == JobStatus.cancelled  # type: ignore[union-attr]

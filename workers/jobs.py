"""The one wrapper every job task goes through: claim, run a plain function, record the end.

Handlers are plain functions ``handler(ctx, session, job) -> dict`` that tests call directly.
Only named transient errors (the database or broker briefly unreachable) are retried, with
exponential backoff and jitter; anything else fails the job with a readable message on its row.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

import redis.exceptions
import sqlalchemy.exc
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from shared.db.models import Job, JobStatus
from shared.jobs import cancel_requested, claim, finish, publish
from shared.logging_setup import JOB_REQUEST_ID_KEY, reset_request_id, set_request_id, task_log
from shared.metrics import JOB_DURATION, JOBS_FINISHED
from shared.model_versions import ModelError
from shared.tasks import TAG_CONTENT
from workers import shutdown
from workers.context import WorkerContext, get_context

log = logging.getLogger(__name__)

Handler = Callable[[WorkerContext, Any, Job], dict[str, Any]]

MAX_RETRIES = 5
TRANSIENT = (sqlalchemy.exc.OperationalError, redis.exceptions.ConnectionError, ConnectionError)


def cancel_poller(ctx: WorkerContext, job_id: str, every_s: float = 2.0) -> Callable[[], bool]:
    """A `should_stop` for training loops: reads the job's cancel flag at most every `every_s`
    (it is called before every step, and a query per step would cost more than the step)."""
    last_check = [0.0]
    cancelled = [False]

    def should_stop() -> bool:
        # A warm shutdown stops training at a checkpoint too; execute() requeues the job.
        if shutdown.requested():
            return True
        now = time.monotonic()
        if not cancelled[0] and now - last_check[0] >= every_s:
            last_check[0] = now
            with ctx.session() as s:
                cancelled[0] = cancel_requested(s, job_id)
        return cancelled[0]

    return should_stop


class JobFailed(Exception):
    """A job cannot succeed; the message is shown to the API user as the job's error."""


class JobCancelled(Exception):
    """The user asked for cancellation; the job ends as ``cancelled``."""


def execute(
    ctx: WorkerContext,
    job_id: str,
    handler: Handler,
    *,
    task_id: str | None = None,
    task_name: str | None = None,
) -> str | None:
    """Run ``handler`` for one job; returns the final status, or None if the job was not ours.

    Every claimed job gets one task log line and its metrics, under the request id that made
    it (``shared.logging_setup``)."""
    with ctx.session() as session:
        job = claim(session, job_id, task_id)
        if job is None:
            return None
        token = set_request_id((job.params or {}).get(JOB_REQUEST_ID_KEY))
        started = time.perf_counter()
        # What the metrics and log say when a transient error escapes to run_task's retry.
        state = "retried"
        try:
            status = _run_claimed(ctx, session, job, handler)
            state = JobStatus(status).value
            return status
        finally:
            elapsed = time.perf_counter() - started
            JOBS_FINISHED.labels(job.type, state).inc()
            JOB_DURATION.labels(job.type, state).observe(elapsed)
            task_log.info(
                "%s job %s (%s) %s in %.0f ms",
                task_name, job_id, job.type, state, elapsed * 1000,
                extra={"task": task_name, "job_id": job_id, "type": job.type, "state": state,
                       "duration_ms": round(elapsed * 1000, 2)},
            )  # fmt: skip
            reset_request_id(token)


def _run_claimed(ctx: WorkerContext, session: Any, job: Job, handler: Handler) -> str:
    job_id = job.id
    try:
        result = handler(ctx, session, job)
    except JobCancelled as exc:
        session.rollback()
        if shutdown.requested() and not cancel_requested(session, job_id):
            _requeue_for_shutdown(session, job)
            return JobStatus.queued
        finish(session, job, status=JobStatus.cancelled, error=str(exc) or "cancelled")
        return JobStatus.cancelled
    except (JobFailed, ModelError, ValueError) as exc:
        session.rollback()
        log.info("job %s failed: %s", job_id, exc)
        finish(session, job, status=JobStatus.failed, error=str(exc))
        _on_failure(ctx, job)
        return JobStatus.failed
    except SoftTimeLimitExceeded:
        session.rollback()
        finish(session, job, status=JobStatus.failed, error="time limit exceeded")
        _on_failure(ctx, job)
        return JobStatus.failed
    except TRANSIENT:
        session.rollback()
        raise
    except Exception as exc:
        session.rollback()
        log.error("job %s crashed:\n%s", job_id, traceback.format_exc())
        finish(
            session,
            job,
            status=JobStatus.failed,
            error=f"internal error: {type(exc).__name__}: {exc}",
        )
        _on_failure(ctx, job)
        return JobStatus.failed
    finish(session, job, status=JobStatus.succeeded, result=result)
    return JobStatus.succeeded


def _requeue_for_shutdown(session: Any, job: Job) -> None:
    """Back to queued, published again at once: the worker stopping acks this delivery, and
    the next worker to take the job resumes it from the checkpoint the loop just wrote."""
    from workers.celery_app import app

    job.status = JobStatus.queued
    job.task_id = None
    job.published_at = None
    session.commit()
    log.info("job %s stopped at a checkpoint for shutdown; queued again", job.id)
    # False (broker down): published_at stays empty and the sweeper publishes it.
    publish(session, app, job)


def _on_failure(ctx: WorkerContext, job: Job) -> None:
    from workers.tagging.pipeline import mark_content_failed

    if job.content_id and job.type == TAG_CONTENT.name:
        with ctx.session() as s:
            mark_content_failed(s, job.content_id)


def run_task(task: Task[Any, Any], job_id: str, handler: Handler) -> str | None:
    """Body of every Celery job task: retry transient errors, then give up into the job row."""
    try:
        status = execute(
            get_context(), job_id, handler, task_id=task.request.id, task_name=task.name
        )
        if status is not None:
            _notify(job_id)
        return status
    except TRANSIENT as exc:
        if task.request.retries >= MAX_RETRIES:
            _give_up(job_id, exc)
            raise
        # Retrying publishes a new message; the job stays claimable because its status is
        # reset to queued first.
        countdown = min(60, 2**task.request.retries)
        log.warning("job %s hit a transient error (%s); retry in %ss", job_id, exc, countdown)
        _release(job_id)
        raise task.retry(exc=exc, countdown=countdown, max_retries=MAX_RETRIES) from exc


def _notify(job_id: str) -> None:
    from workers.webhooks import notify_job_finished

    try:
        notify_job_finished(get_context(), job_id)
    except Exception as exc:  # a notification problem must not fail a finished job
        log.warning("could not queue webhooks for job %s: %s", job_id, exc)


def _give_up(job_id: str, exc: Exception) -> None:
    ctx = get_context()
    try:
        with ctx.session() as s:
            job = s.get(Job, job_id)
            if job is None or job.status in (JobStatus.succeeded, JobStatus.failed):
                return
            finish(s, job, status=JobStatus.failed, error=f"gave up after retries: {exc}")
            job_gave_up(ctx, job)
    except TRANSIENT:
        pass  # the sweeper fails it after max attempts


def job_gave_up(ctx: WorkerContext, job: Job) -> None:
    """A job failed outside its handler (retries spent, worker lost too often): its item is
    marked failed and its webhooks fire, as when the handler fails it."""
    # A database fault leaves the item as it was; the job row already says failed.
    with contextlib.suppress(*TRANSIENT):
        _on_failure(ctx, job)
    _notify(job.id)


def _release(job_id: str) -> None:
    try:
        with get_context().session() as s:
            job = s.get(Job, job_id)
            if job is not None and job.status == JobStatus.running:
                job.status = JobStatus.queued
                job.task_id = None
                s.commit()
    except TRANSIENT:
        pass  # the sweeper rescues the job once it has been silent long enough

"""Job rows: create, publish, claim, report progress, finish, sweep.

The jobs table is the source of truth. A producer commits the job row first and publishes the
Celery message second; if publishing fails (Redis down), the sweeper publishes it later, so an
accepted request is never only in Redis and never lost.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from shared.db.models import Job, JobStatus
from shared.logging_setup import JOB_REQUEST_ID_KEY, request_id_var
from shared.tasks import JOB_TYPES

log = logging.getLogger(__name__)

FINAL_STATES = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


def _now() -> datetime:
    return datetime.now(UTC)


def new_job(
    session: Session,
    *,
    tenant_id: str | None,
    job_type: str,
    params: dict[str, Any] | None = None,
    content_id: str | None = None,
) -> Job:
    """Add a queued job to the session (the caller commits it with the rows it belongs to).

    ``tenant_id=None`` makes a system job (shared/bundled.py)."""
    jt = JOB_TYPES[job_type]
    params = dict(params or {})
    # The request that made the job, so the worker's log line for it carries the same id.
    request_id = request_id_var.get()
    if request_id and JOB_REQUEST_ID_KEY not in params:
        params[JOB_REQUEST_ID_KEY] = request_id
    job = Job(
        id=str(uuid.uuid4()),
        tenant_id=tenant_id,
        type=jt.name,
        queue=jt.queue,
        status=JobStatus.queued,
        params=params,
        content_id=content_id,
        created_at=_now(),
    )
    session.add(job)
    return job


def publish(session: Session, celery: Celery, job: Job) -> bool:
    """Send the task for a committed job; ``False`` (and a log line) if the broker is down."""
    jt = JOB_TYPES[job.type]
    try:
        celery.send_task(jt.task, kwargs={"job_id": job.id}, queue=jt.queue, retry=False)
    except Exception as exc:  # kombu raises OperationalError, redis ConnectionError, OSError
        log.warning("could not publish job %s (%s); the sweeper will retry", job.id, exc)
        return False
    session.execute(update(Job).where(Job.id == job.id).values(published_at=_now()))
    session.commit()
    return True


def forget_publications(session: Session) -> int:
    """Mark every queued job as never published, so the next sweep publishes it again.

    For a broker known to have lost its messages (a private Redis restarted empty): waiting
    ``requeue_after`` would leave those jobs idle for minutes. A message that survived anyway
    only adds a duplicate delivery, which ``claim`` ignores."""
    res = session.execute(
        update(Job)
        .where(Job.status == JobStatus.queued, Job.published_at.is_not(None))
        .values(published_at=None)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return int(res.rowcount)  # type: ignore[attr-defined]


def claim(session: Session, job_id: str, task_id: str | None) -> Job | None:
    """Mark a job running for this delivery; ``None`` if someone else owns it or it is done.

    A queued job is claimed by whichever delivery gets it first (a conditional UPDATE, so two
    workers cannot both win). A running job may be claimed again only by a redelivery of the
    same message, which means the worker that ran it died.
    """
    job = session.get(Job, job_id)
    if job is None:
        log.warning("job %s does not exist; dropping its message", job_id)
        return None
    if job.status in FINAL_STATES:
        return None
    if job.cancel_requested:
        finish(session, job, status=JobStatus.cancelled, error="cancelled before it started")
        return None
    cond = Job.status == JobStatus.queued
    if task_id is not None:
        cond = or_(cond, (Job.status == JobStatus.running) & (Job.task_id == task_id))
    res = session.execute(
        update(Job)
        .where(Job.id == job_id, cond)
        .values(
            status=JobStatus.running,
            started_at=_now(),
            updated_at=_now(),
            attempts=Job.attempts + 1,
            task_id=task_id,
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return None
    session.refresh(job)
    return job


def report_progress(session: Session, job_id: str, progress: float, **result: Any) -> bool:
    """Store progress (0..1) and partial results; returns whether cancellation was requested."""
    job = session.get(Job, job_id)
    if job is None:
        return True
    job.progress = max(0.0, min(1.0, progress))
    if result:
        job.result = {**(job.result or {}), **result}
    job.updated_at = _now()
    session.commit()
    session.refresh(job)
    return bool(job.cancel_requested)


def cancel_requested(session: Session, job_id: str) -> bool:
    value = session.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar()
    return bool(value)


def finish(
    session: Session,
    job: Job,
    *,
    status: JobStatus,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    # Progress reports write partial results from other sessions: merge onto the stored ones.
    session.flush()
    session.refresh(job, attribute_names=["result"])
    job.status = status
    if result is not None:
        job.result = {**(job.result or {}), **result}
    job.error = error
    if status == JobStatus.succeeded:
        job.progress = 1.0
    job.finished_at = _now()
    session.commit()


def sweep(
    session: Session,
    celery: Celery,
    *,
    requeue_after: timedelta,
    stale_after: dict[str, timedelta],
    publish_grace: timedelta = timedelta(seconds=10),
    on_failed: Callable[[Job], None] | None = None,
) -> dict[str, int]:
    """Publish jobs that never reached the broker, and rescue jobs whose worker went silent.

    A job whose worker was lost ``max_attempts`` times fails; ``on_failed`` then gets it (the
    workers mark its content item failed and notify, as for any other failure)."""
    now = _now()
    counts = {"republished": 0, "rescued": 0, "failed": 0}
    queued = session.scalars(
        select(Job).where(
            Job.status == JobStatus.queued,
            or_(
                Job.published_at.is_(None) & (Job.created_at < now - publish_grace),
                Job.published_at < now - requeue_after,
            ),
        )
    ).all()
    for job in queued:
        if publish(session, celery, job):
            counts["republished"] += 1
    running = session.scalars(select(Job).where(Job.status == JobStatus.running)).all()
    for job in running:
        limit = stale_after.get(job.queue, max(stale_after.values()))
        updated = job.updated_at
        if updated is None or updated > now - limit:
            continue
        jt = JOB_TYPES[job.type]
        if job.attempts >= jt.max_attempts:
            finish(
                session,
                job,
                status=JobStatus.failed,
                error=f"worker lost {job.attempts} times (no progress for {limit})",
            )
            counts["failed"] += 1
            if on_failed is not None:
                on_failed(job)
            continue
        job.status = JobStatus.queued
        job.task_id = None
        session.commit()
        if publish(session, celery, job):
            counts["rescued"] += 1
    return counts

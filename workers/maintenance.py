"""Periodic housekeeping run by Celery beat."""

from __future__ import annotations

from datetime import timedelta

from shared.jobs import sweep
from shared.tasks import (
    QUEUE_BUILDS,
    QUEUE_GENERATION,
    QUEUE_TAGGING,
    QUEUE_TRAINING,
    SWEEP_TASK,
)
from workers.celery_app import app
from workers.context import get_context
from workers.jobs import job_gave_up


@app.task(name=SWEEP_TASK, ignore_result=True)
def sweep_jobs() -> dict[str, int]:
    ctx = get_context()
    s = ctx.settings
    # Past its hard time limit a job's task is dead for sure (Celery kills it there).
    lost = timedelta(seconds=s.task_time_limit_s + s.lost_worker_grace_s)
    stale = {
        QUEUE_TAGGING: lost,
        QUEUE_GENERATION: lost,
        # Training jobs report progress at least every few minutes.
        QUEUE_TRAINING: timedelta(minutes=15),
        QUEUE_BUILDS: timedelta(minutes=15),
    }
    # A deleter that crashed between setting a blob aside and deciding leaves it aside: put it
    # back (shared/storage.py); a minute is far longer than that decision takes.
    ctx.storage.recover_set_aside(older_than_s=60)
    with ctx.session() as session:
        return sweep(
            session,
            app,
            requeue_after=timedelta(seconds=s.requeue_after_s),
            stale_after=stale,
            on_failed=lambda job: job_gave_up(ctx, job),
        )

"""The job that builds a bundled generator inside the running suite (see shared/bundled.py).

It runs the same build code as `make models` (workers/training/build/), with the training
events written to the job row: ``stage``, ``progress`` and the latest validation numbers, which
`atelier run`'s console, `atelier status` and the generation endpoints' 503 read back.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from celery import Task
from sqlalchemy.orm import Session

from shared.bundled import BUILD_JOB, GENERATORS
from shared.config import worker_settings
from shared.db.models import Job
from shared.inference.manifest import read_manifest
from shared.jobs import report_progress
from shared.tasks import JOB_TYPES
from workers.celery_app import app
from workers.context import WorkerContext
from workers.jobs import JobCancelled, JobFailed, cancel_poller, run_task

log = logging.getLogger(__name__)

# Job params passed through to each builder's build(); anything else is ignored, so a stale
# row from an older version can still run.
BUILD_PARAMS = {
    "text_generator": ("epochs", "budget_s", "limit", "config"),
    "image_generator": ("steps", "budget_s", "limit", "config"),
}
# Training events -> the stage the console shows.
STAGES = {
    "start": "training",
    "resumed": "training",
    "step": "training",
    "epoch": "training",
    "evaluating": "evaluating",
    "critic": "training the critic",
    "done": "publishing",
}


def build_bundled_model_job(ctx: WorkerContext, session: Session, job: Job) -> dict[str, Any]:
    from workers.training.checkpoints import TrainingCancelled

    model = str(job.params.get("model"))
    if model not in GENERATORS:
        raise JobFailed(f"{model!r} is not a bundled generator")
    builder = importlib.import_module(f"workers.training.build.{model}")
    kwargs = {k: job.params[k] for k in BUILD_PARAMS[model] if job.params.get(k) is not None}
    progress, should_stop = _hooks(ctx, job)
    progress({"event": "preparing"})
    try:
        path = builder.build(
            ctx.settings.models_dir,
            log=lambda m: log.debug("%s build: %s", model, m),
            progress=progress,
            should_stop=should_stop,
            **kwargs,
        )
    except TrainingCancelled as exc:
        raise JobCancelled(str(exc)) from exc
    manifest = read_manifest(path)
    return {
        "model": f"{manifest.name}:{manifest.version}",
        "metrics": manifest.metrics,
        "stage": "ready",
    }


def _hooks(
    ctx: WorkerContext, job: Job
) -> tuple[Callable[[dict[str, Any]], None], Callable[[], bool]]:
    """Training events go to the job row; cancellation is read from it at most every 2 s."""

    def progress(event: dict[str, Any]) -> None:
        kind = event.get("event")
        fraction = event.get("fraction")
        if fraction is None and event.get("steps") and event.get("step") is not None:
            fraction = event["step"] / event["steps"]
        extra: dict[str, Any] = {"last_event": event}
        if kind == "preparing":
            extra["stage"] = "preparing data"
        elif kind in STAGES:
            extra["stage"] = STAGES[kind]
        for key in ("step", "steps", "val_bpc", "ngram_val_bpc"):
            if event.get(key) is not None:
                extra[key] = event[key]
        with ctx.session() as s:
            current = s.get(Job, job.id)
            done = (current.progress if current else 0.0) if fraction is None else fraction
            # 100% is for the finished job only: the model is exported after the last event.
            report_progress(s, job.id, min(done, 0.99), **extra)

    return progress, cancel_poller(ctx, job.id)


_limit = worker_settings().training_time_limit_s


# The task-wide default limit (task_time_limit_s, minutes) is for tagging and generation; a
# build trains for several minutes, so it gets the training limit, as recommender training does.
@app.task(name=JOB_TYPES[BUILD_JOB].task, bind=True, soft_time_limit=_limit, time_limit=_limit + 60)
def build_bundled_model_task(self: Task[Any, Any], job_id: str) -> str | None:
    return run_task(self, job_id, build_bundled_model_job)

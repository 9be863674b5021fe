"""The bundled generators, built by the running suite as system jobs on the `training` queue.

`atelier run` builds only what serving needs before it starts (the taggers: seconds). The bundled
text and image generators take minutes to train, so the suite builds them itself: one
``build_bundled_model`` job per generator whose first version does not exist yet, run by the
training worker (workers/training/bundled.py) with its progress on the job row. Until a generator
exists, its endpoints answer 503 ``model_not_ready`` naming the job.

System jobs have no tenant (``jobs.tenant_id`` is NULL), like the bundled models' rows in
``model_versions``. They carry nothing but public training data, so every API key may read them
(``GET /v1/jobs/{id}``, where the 503 points) and none may cancel them; no tenant webhook fires.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.models import Job, JobStatus
from shared.jobs import FINAL_STATES, new_job, publish
from shared.model_versions import active_version
from shared.tasks import BUILD_BUNDLED_MODEL

BUILD_JOB = BUILD_BUNDLED_MODEL.name
# Registry name -> what the console calls it. Enqueued in this order; the training worker runs
# one job at a time, so the text generator (the more used one) comes first.
GENERATORS: dict[str, str] = {
    "text_generator": "text generator",
    "image_generator": "image generator",
}
PENDING = (JobStatus.queued, JobStatus.running)


def build_jobs(session: Session, model: str, statuses: Iterable[str] | None = None) -> list[Job]:
    """System build jobs of one bundled model, newest first."""
    stmt = select(Job).where(Job.type == BUILD_JOB, Job.tenant_id.is_(None))
    if statuses is not None:
        stmt = stmt.where(Job.status.in_(list(statuses)))
    rows = session.scalars(stmt.order_by(Job.created_at.desc())).all()
    # The model is named in the JSON params; build jobs are few, so filtering here is cheap and
    # needs no JSON operator that differs between SQLite and PostgreSQL.
    return [j for j in rows if (j.params or {}).get("model") == model]


def pending_build(session: Session, model: str) -> Job | None:
    """The queued or running build of ``model``, if any."""
    jobs = build_jobs(session, model, PENDING)
    return jobs[0] if jobs else None


def missing(models_dir: Path, models: Iterable[str] = GENERATORS) -> list[str]:
    return [m for m in models if active_version(models_dir, m) is None]


def ensure_builds(
    session: Session,
    celery: Celery,
    models_dir: Path,
    *,
    models: Iterable[str] = GENERATORS,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    restart: bool = False,
) -> dict[str, Job]:
    """One build job for each of ``models`` that has no version yet; returns them by model.

    A build that is already queued or running is reused, never doubled. ``params`` adds build
    parameters per model (tests pass tiny sizes). ``restart=True`` is for `atelier run`, which
    starts the only training worker of its suite: a build still marked running lost its worker
    when the last run stopped, so it is queued and published again, and resumes from its
    checkpoint (a stale message of the old run that arrives later is dropped by ``claim``).
    """
    out: dict[str, Job] = {}
    for model in missing(models_dir, models):
        if model not in GENERATORS:
            raise ValueError(f"{model!r} is not a bundled generator")
        job = pending_build(session, model)
        if job is None:
            extra = dict((params or {}).get(model, {}))
            job = new_job(session, tenant_id=None, job_type=BUILD_JOB,
                          params={**extra, "model": model})  # fmt: skip
            session.commit()
            publish(session, celery, job)
        elif restart:
            if job.status == JobStatus.running:
                job.status = JobStatus.queued
                job.task_id = None
                session.commit()
            publish(session, celery, job)
        out[model] = job
    return out


def progress_details(job: Job) -> dict[str, Any]:
    """What an API client is told about a build it is waiting for."""
    return {
        "job_id": job.id,
        "model": (job.params or {}).get("model"),
        "status": job.status,
        "stage": (job.result or {}).get("stage"),
        "progress": round(job.progress or 0.0, 3),
    }


def describe(job: Job) -> str:
    """One console line, e.g. ``text generator: training 40% (val 2.61 bits/char)``."""
    model = str((job.params or {}).get("model"))
    label = GENERATORS.get(model, model)
    result = job.result or {}
    if job.status == JobStatus.queued:
        return f"{label}: build queued for the build worker"
    if job.status == JobStatus.succeeded:
        took = ""
        if job.started_at and job.finished_at:
            secs = int((job.finished_at - job.started_at).total_seconds())
            took = f" in {secs // 60}m{secs % 60:02d}s"
        return f"{label}: ready{took}{_final_metrics(result.get('metrics') or {})}"
    if job.status == JobStatus.failed:
        return f"{label}: build failed: {job.error} (job {job.id})"
    if job.status == JobStatus.cancelled:
        return f"{label}: build cancelled (job {job.id})"
    stage = result.get("stage") or "starting"
    return f"{label}: {stage} {int((job.progress or 0.0) * 100)}%{_running_detail(result)}"


def _running_detail(result: Mapping[str, Any]) -> str:
    if isinstance(result.get("val_bpc"), int | float):
        return f" (val {result['val_bpc']:.2f} bits/char)"
    if result.get("step") is not None and result.get("steps"):
        return f" (step {result['step']}/{result['steps']})"
    return ""


def _final_metrics(metrics: Mapping[str, Any]) -> str:
    if isinstance(metrics.get("val_bpc"), int | float):
        tail = ""
        for key, label in (("ngram_val_bpc", "n-gram"), ("mixture_val_bpc", "served mixture")):
            if isinstance(metrics.get(key), int | float):
                tail += f"; {label} {metrics[key]:.2f}"
        return f" (val {metrics['val_bpc']:.2f} bits/char{tail})"
    if isinstance(metrics.get("fid"), int | float):
        return f" (FID {metrics['fid']:.2f})"
    return ""


@dataclass
class BuildWatcher:
    """Turns build job rows into console lines: one per stage, one per tenth of progress, one
    at the end. The supervisor calls :meth:`poll` every few seconds with a fresh session."""

    job_ids: list[str]
    say: Callable[[str], None]
    _shown: dict[str, tuple[str, str, int]] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return not self.job_ids

    def line(self, job: Job) -> str | None:
        """The line for this state of ``job``, or None when nothing worth a line changed."""
        stage = str((job.result or {}).get("stage") or "")
        key = (str(job.status), stage, int((job.progress or 0.0) * 10))
        if self._shown.get(job.id) == key:
            return None
        self._shown[job.id] = key
        return describe(job)

    def poll(self, session: Session) -> None:
        for job_id in list(self.job_ids):
            job = session.get(Job, job_id)
            if job is None:
                self.job_ids.remove(job_id)
                continue
            text = self.line(job)
            if text is not None:
                self.say(text)
            if job.status in FINAL_STATES:
                self.job_ids.remove(job_id)

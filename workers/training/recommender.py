"""Train a tenant's recommender from the SQL interaction store (queue ``training``).

``train_for_tenant`` is the plain function (tests and the CLI call it directly); the Celery
task only claims the job and delegates. Each run writes a new versioned artefact directory
``<models_dir>/recommender/<tenant_id>/<version>/`` atomically (built under a temporary name,
then renamed), records a ``ModelVersion`` row with its metrics and makes it the active one.
The recommender service notices the new active version on its next check and hot-loads it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from celery import Task
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ranking.data import Interactions
from ranking.models import Popularity, Recommender
from ranking.select import train_and_select
from shared.config import worker_settings
from shared.db.model_versions import record_version
from shared.db.models import Interaction, Job, JobStatus, ModelVersion, Tenant
from shared.jobs import new_job, publish, report_progress
from shared.model_versions import recommender_model_name
from shared.recommender_config import get_config
from shared.tasks import SCHEDULE_RECOMMENDERS_TASK, TRAIN_RECOMMENDER
from workers.celery_app import app
from workers.context import WorkerContext, get_context
from workers.jobs import JobCancelled, JobFailed, run_task

log = logging.getLogger(__name__)

MIN_EVENTS = 2

Progress = Callable[[float, str], None]


def artefact_root(models_dir: Path, tenant_id: str) -> Path:
    return Path(models_dir) / "recommender" / tenant_id


def new_version() -> str:
    # Sortable as text, so "newest" is a plain ORDER BY / max().
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def read_interactions(
    session: Session, *, tenant_id: str, event_weights: dict[str, float]
) -> tuple[Interactions, int]:
    """The tenant's event log as weighted arrays, and the newest event row id (watermark)."""
    users: list[str] = []
    items: list[str] = []
    weights: list[float] = []
    times: list[float] = []
    last_id = 0
    rows = session.execute(
        select(
            Interaction.id,
            Interaction.user_id,
            Interaction.item_id,
            Interaction.event_type,
            Interaction.value,
            Interaction.occurred_at,
        )
        .where(Interaction.tenant_id == tenant_id)
        .execution_options(yield_per=50_000)
    )
    for row_id, user, item, etype, value, occurred in rows:
        last_id = max(last_id, row_id)
        # A type whose weight was removed from the config no longer counts.
        w = event_weights.get(etype)
        if not w:
            continue
        users.append(user)
        items.append(item)
        weights.append(w * (1.0 if value is None else value))
        times.append(occurred.timestamp())
    inter = Interactions.from_arrays(
        np.asarray(users, dtype=object),
        np.asarray(items, dtype=object),
        np.asarray(weights, dtype=np.float32),
        np.asarray(times, dtype=np.float64),
    )
    return inter, last_id


def default_budget_s(n_events: int) -> float:
    """Tuning time for a log of this size: 90 s at 100k events, 10 minutes from 1M on."""
    return float(min(600.0, 30.0 + 0.6 * n_events / 1000))


def train_for_tenant(
    session: Session,
    *,
    tenant_id: str,
    models_dir: Path,
    budget_s: float | None = None,
    candidates: Sequence[str] | None = None,
    job_id: str | None = None,
    progress: Progress | None = None,
    activate: bool = True,
) -> dict[str, Any]:
    """Read, select, save, register. Returns a summary for the job's result."""
    say = progress or (lambda _p, _m: None)
    cfg = get_config(session, tenant_id=tenant_id)
    say(0.05, "reading interactions")
    inter, last_id = read_interactions(
        session, tenant_id=tenant_id, event_weights=cfg.event_weights
    )
    positives = int((inter.weight > 0).sum())
    if positives < MIN_EVENTS or inter.n_items < 2:
        raise JobFailed(
            f"not enough interactions to train on ({positives} positive events, "
            f"{inter.n_items} items); send more with POST /v1/interactions"
        )
    say(0.15, f"selecting a model on {len(inter)} events")
    start = time.perf_counter()
    try:
        selection = train_and_select(
            inter,
            candidates=candidates,
            budget_s=default_budget_s(len(inter)) if budget_s is None else budget_s,
            half_life_days=cfg.half_life_days,
        )
    except ValueError as exc:  # unknown candidate names
        raise JobFailed(str(exc)) from exc
    model, fallback, best = selection.model, selection.fallback, selection.best
    trending = Popularity(half_life_days=cfg.trending_half_life_days).fit_events(
        inter.item_idx, inter.weight, inter.timestamp, n_items=inter.n_items
    )
    train_s = time.perf_counter() - start
    say(0.85, f"saving {best}")

    metrics = {
        "selected": best,
        "params": model.params(),
        "n_users": inter.n_users,
        "n_items": inter.n_items,
        "n_events": len(inter),
        "last_event_id": last_id,
        "train_s": round(train_s, 3),
        **selection.metrics(),
    }
    version = save_version(
        session,
        tenant_id=tenant_id,
        models_dir=models_dir,
        model=model,
        fallback=fallback,
        trending=trending,
        item_ids=inter.item_ids,
        metrics=metrics,
        job_id=job_id,
        activate=activate,
    )
    say(1.0, "done")
    return {"version": version, "model": best, "metrics": metrics}


def save_version(
    session: Session,
    *,
    tenant_id: str,
    models_dir: Path,
    model: Recommender,
    fallback: Popularity,
    trending: Popularity,
    item_ids: list[str],
    metrics: dict[str, Any],
    job_id: str | None = None,
    activate: bool = True,
) -> str:
    """Write a new artefact directory atomically and register it; returns the version."""
    version = new_version()
    best = model.name
    root = artefact_root(models_dir, tenant_id)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{version}.{uuid.uuid4().hex[:8]}.part"
    try:
        model.save(tmp / "model")
        fallback.save(tmp / "fallback")
        trending.save(tmp / "trending")
        # Item order of the matrix: index i of every model above is item_ids[i].
        (tmp / "items.json").write_text(json.dumps(item_ids))
        meta = {"version": version, "model": best, "tenant_id": tenant_id, "metrics": metrics}
        (tmp / "meta.json").write_text(json.dumps(meta))
        _fsync_dir(tmp)
        os.rename(tmp, root / version)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    name = recommender_model_name(tenant_id)
    record_version(
        session,
        tenant_id=tenant_id,
        name=name,
        version=version,
        kind=best,
        metrics=metrics,
        job_id=job_id,
        activate=activate,
    )
    session.commit()
    return version


def _fsync_dir(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def train_recommender_job(ctx: WorkerContext, session: Session, job: Job) -> dict[str, Any]:
    def progress(p: float, stage: str) -> None:
        if report_progress(session, job.id, p, stage=stage):
            raise JobCancelled("cancelled during training")

    params = job.params or {}
    return train_for_tenant(
        session,
        tenant_id=job.owner(),
        models_dir=ctx.settings.models_dir,
        budget_s=None if params.get("budget_s") is None else float(params["budget_s"]),
        candidates=params.get("candidates"),
        job_id=job.id,
        progress=progress,
    )


_limit = worker_settings().training_time_limit_s


@app.task(
    name=TRAIN_RECOMMENDER.task,
    bind=True,
    soft_time_limit=_limit,
    time_limit=_limit + 60,
)
def train_recommender(self: Task[Any, Any], job_id: str) -> str | None:
    return run_task(self, job_id, train_recommender_job)


def tenants_needing_training(session: Session) -> list[str]:
    """Tenants with events newer than their newest model and no training job pending."""
    newest_event = dict(
        session.execute(
            select(Interaction.tenant_id, func.max(Interaction.id)).group_by(Interaction.tenant_id)
        ).all()
    )
    pending = set(
        session.scalars(
            select(Job.tenant_id).where(
                Job.type == TRAIN_RECOMMENDER.name,
                Job.status.in_((JobStatus.queued, JobStatus.running)),
            )
        )
    )
    due = []
    for tenant_id, last_id in newest_event.items():
        if tenant_id in pending:
            continue
        latest = session.scalars(
            select(ModelVersion)
            .where(ModelVersion.name == recommender_model_name(tenant_id))
            .order_by(ModelVersion.version.desc())
            .limit(1)
        ).first()
        seen = int((latest.metrics or {}).get("last_event_id", 0)) if latest else 0
        if last_id > seen:
            due.append(tenant_id)
    return due


def schedule_training(session: Session, celery: Any) -> list[str]:
    jobs = []
    for tenant_id in tenants_needing_training(session):
        if session.get(Tenant, tenant_id) is None:
            continue
        jobs.append(new_job(session, tenant_id=tenant_id, job_type=TRAIN_RECOMMENDER.name))
    session.commit()
    for job in jobs:
        publish(session, celery, job)
    return [j.id for j in jobs]


@app.task(name=SCHEDULE_RECOMMENDERS_TASK, ignore_result=True)
def schedule_recommender_training() -> list[str]:
    with get_context().session() as session:
        return schedule_training(session, app)

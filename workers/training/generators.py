"""Training jobs for the tenant's own text (RNN) and image (GAN) generators.

The torch code lives in ``workers.training.rnn`` / ``gan``; this module gathers the tenant's
corpus from SQL and storage, wires progress and cancellation to the job row, keeps checkpoints
per job (so a job re-run after a worker died resumes), and records the model version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import Task
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.config import worker_settings
from shared.db.model_versions import record_version
from shared.db.models import ContentItem, Job, Tag, TagOrigin
from shared.inference.manifest import Manifest
from shared.inference.registry import next_version, set_active_version, tenant_model_name
from shared.jobs import report_progress
from workers.celery_app import app
from workers.context import WorkerContext
from workers.jobs import JobCancelled, JobFailed, cancel_poller, run_task

log = logging.getLogger(__name__)

MIN_TEXT_BYTES = 2_000
MIN_IMAGES = 16
# When a request names neither an epoch cap nor a time budget.
DEFAULT_TEXT_EPOCHS = 3


def _corpus_items(session: Session, job: Job, *, images: bool) -> list[ContentItem]:
    flt = job.params.get("filter") or {}
    stmt = select(ContentItem).where(ContentItem.tenant_id == job.tenant_id)
    if flt.get("kind"):
        stmt = stmt.where(ContentItem.kind == flt["kind"])
    elif images:
        stmt = stmt.where(ContentItem.kind == "image")
    if flt.get("tag"):
        stmt = stmt.where(
            ContentItem.id.in_(
                select(Tag.content_id).where(
                    Tag.tenant_id == job.tenant_id,
                    Tag.name == str(flt["tag"]).strip().lower(),
                    Tag.origin != TagOrigin.rejected,
                )
            )
        )
    return list(session.scalars(stmt.order_by(ContentItem.created_at, ContentItem.id)).all())


def _hooks(
    ctx: WorkerContext, job: Job
) -> tuple[Callable[[dict[str, Any]], None], Callable[[], bool]]:
    """Progress goes to the job row; cancellation is polled from it at most every 2 s."""

    def progress(event: dict[str, Any]) -> None:
        steps = event.get("steps")
        step = event.get("step")
        fraction = event.get("fraction")
        if fraction is None and steps and step is not None:
            fraction = step / steps
        extra: dict[str, Any] = {"last_event": event}
        if event.get("event") == "resumed":
            # Kept apart from last_event, which later steps overwrite.
            extra["resumed_from_step"] = event.get("step")
        with ctx.session() as s:
            current = s.get(Job, job.id)
            done = (current.progress if current else 0.0) if fraction is None else fraction
            report_progress(s, job.id, min(done, 0.99), **extra)

    return progress, cancel_poller(ctx, job.id)


def _checkpoint_dir(ctx: WorkerContext, job: Job) -> Path:
    return ctx.settings.models_dir / ".checkpoints" / job.id


def _record(session: Session, job: Job, manifest: Manifest, name: str, kind: str) -> None:
    record_version(
        session,
        tenant_id=job.tenant_id,
        name=name,
        version=manifest.version,
        kind=kind,
        metrics=manifest.metrics,
        job_id=job.id,
    )


def train_text_generator_job(ctx: WorkerContext, session: Session, job: Job) -> dict[str, Any]:
    from workers.training.rnn import RNNConfig, TrainingCancelled, train_text_generator

    p = job.params
    texts = [
        "\n".join(x for x in (item.title, item.text) if x)
        for item in _corpus_items(session, job, images=False)
    ]
    texts = [t for t in texts if t.strip()]
    if p.get("corpus"):
        texts += [t for t in str(p["corpus"]).split("\n\n") if t.strip()]
    size = sum(len(t.encode()) for t in texts)
    if size < MIN_TEXT_BYTES:
        raise JobFailed(
            f"the corpus has {size} bytes of text; at least {MIN_TEXT_BYTES} are needed "
            "(add content, widen the filter or send `corpus`)"
        )
    name = tenant_model_name("text_generator", job.tenant_id)
    version = job.params.get("_version") or next_version(ctx.settings.models_dir, name)
    _pin_version(session, job, version)
    progress, should_stop = _hooks(ctx, job)
    config = RNNConfig(hidden=int(p.get("hidden", 256)), layers=int(p.get("layers", 2)))
    epochs, budget_s = p.get("epochs"), p.get("budget_s")
    if epochs is None and budget_s is None:
        epochs = DEFAULT_TEXT_EPOCHS
    try:
        manifest = train_text_generator(
            texts, ctx.settings.models_dir, name, version,
            epochs=epochs, budget_s=budget_s, config=config, progress=progress,
            should_stop=should_stop, checkpoint_dir=_checkpoint_dir(ctx, job),
            threads=ctx.settings.ort_threads, extra={"tenant_id": job.tenant_id},
            overwrite=True,
        )  # fmt: skip
    except TrainingCancelled as exc:
        raise JobCancelled(str(exc)) from exc
    set_active_version(ctx.settings.models_dir, name, version)
    _record(session, job, manifest, name, "text_generator")
    return {"model": f"{name}:{version}", "metrics": manifest.metrics, "documents": len(texts)}


def train_image_generator_job(ctx: WorkerContext, session: Session, job: Job) -> dict[str, Any]:
    from shared.imaging import open_image
    from workers.training.gan import TrainingCancelled, train_image_generator

    images = []
    for item in _corpus_items(session, job, images=True):
        original = next((a for a in item.assets if a.role == "original"), None)
        if original is None:
            continue
        with ctx.storage.open(original.storage_key) as f:
            images.append(open_image(f))
    if len(images) < MIN_IMAGES:
        raise JobFailed(f"found {len(images)} images to train on; at least {MIN_IMAGES} are needed")
    embed, embed_name = _image_embedder(ctx)
    name = tenant_model_name("image_generator", job.tenant_id)
    version = job.params.get("_version") or next_version(ctx.settings.models_dir, name)
    _pin_version(session, job, version)
    progress, should_stop = _hooks(ctx, job)
    try:
        manifest = train_image_generator(
            images, ctx.settings.models_dir, name, version,
            steps=int(job.params.get("steps", 800)), progress=progress,
            should_stop=should_stop, checkpoint_dir=_checkpoint_dir(ctx, job), embed=embed,
            embed_name=embed_name, threads=ctx.settings.ort_threads,
            extra={"tenant_id": job.tenant_id}, overwrite=True,
        )  # fmt: skip
    except TrainingCancelled as exc:
        raise JobCancelled(str(exc)) from exc
    set_active_version(ctx.settings.models_dir, name, version)
    _record(session, job, manifest, name, "image_generator")
    return {"model": f"{name}:{version}", "metrics": manifest.metrics, "images": len(images)}


def _pin_version(session: Session, job: Job, version: str) -> None:
    # A resumed run (worker died) must publish the same version it started.
    if job.params.get("_version") != version:
        job.params = {**job.params, "_version": version}
        session.commit()


def _image_embedder(ctx: WorkerContext) -> tuple[Any, str | None]:
    from shared.inference.base import ModelError
    from workers.tagging.image import ImageTagger

    try:
        tagger = ctx.registry.get(ctx.settings.image_model, ImageTagger)
    except ModelError:
        return None, None
    return tagger.embed, tagger.ref


# Without these, the app-wide task limit (task_time_limit_s: minutes, for tagging and
# generation) would fail any training longer than five minutes, whatever its budget_s.
_limit = worker_settings().training_time_limit_s


@app.task(
    name="atelier.train_text_generator", bind=True, soft_time_limit=_limit, time_limit=_limit + 60
)
def train_text_generator_task(self: Task, job_id: str) -> str | None:
    return run_task(self, job_id, train_text_generator_job)


@app.task(
    name="atelier.train_image_generator", bind=True, soft_time_limit=_limit, time_limit=_limit + 60
)
def train_image_generator_task(self: Task, job_id: str) -> str | None:
    return run_task(self, job_id, train_image_generator_job)

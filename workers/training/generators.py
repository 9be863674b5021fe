"""Training jobs for the tenant's own text (RNN) and image (GAN) generators.

The torch code lives in ``workers.training.rnn`` / ``gan``; this module gathers the tenant's
corpus from SQL and storage, wires progress and cancellation to the job row, keeps checkpoints
per job (so a job re-run after a worker died resumes), and records the model version.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import Task
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.config import worker_settings
from shared.db.model_versions import record_version
from shared.db.models import HUMAN_ORIGINS, ContentItem, Job, Tag, TagOrigin
from shared.inference.manifest import Manifest
from shared.jobs import report_progress
from shared.model_versions import next_version, set_active_version, tenant_model_name
from shared.tasks import TRAIN_IMAGE_GENERATOR, TRAIN_TEXT_GENERATOR
from workers.celery_app import app
from workers.context import WorkerContext
from workers.jobs import JobCancelled, JobFailed, cancel_poller, run_task

log = logging.getLogger(__name__)

MIN_TEXT_BYTES = 2_000
MIN_IMAGES = 16
# Image generator: seconds when a request names neither a step cap nor a budget; a tag takes
# part in a conditional GAN with this many images, and at most this many tags do.
DEFAULT_IMAGE_BUDGET_S = 600.0
MIN_TAG_IMAGES = 16
MAX_GAN_TAGS = 32
# Text generator: seconds when a request names neither an epoch cap nor a budget.
DEFAULT_TEXT_BUDGET_S = 600.0


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
    """Params: ``budget_s`` and/or ``epochs`` (a cap; :data:`DEFAULT_TEXT_BUDGET_S` seconds
    when neither is given), ``filter``, ``corpus`` (extra untagged text, documents split at
    blank lines), ``conditional`` (false: no control codes; otherwise every tag on enough
    documents gets one, see :func:`choose_tags`), ``hidden``, ``layers``."""
    from workers.training.checkpoints import TrainingCancelled
    from workers.training.rnn import RNNConfig, train_text_generator
    from workers.training.text_data import MIN_TAG_DOCS

    p = job.params
    items = [
        item
        for item in _corpus_items(session, job, images=False)
        if any(x and x.strip() for x in (item.title, item.text))
    ]
    texts = ["\n".join(x for x in (item.title, item.text) if x) for item in items]
    tags: list[str | None] = [None] * len(texts)
    if p.get("conditional") is not False:
        labels, names = None, None
        if items:
            labels, names = choose_tags(
                _text_tags(session, job, items, p.get("condition_tags")), min_items=MIN_TAG_DOCS
            )
        if labels is not None and names is not None:
            tags = [None if y is None else names[y] for y in labels]
        elif p.get("conditional"):
            raise JobFailed(
                f"conditional training needs at least 2 tags on {MIN_TAG_DOCS} or more of the "
                "documents each; train without `conditional` or tag more content"
            )
    if p.get("corpus"):
        extra_texts = [t for t in str(p["corpus"]).split("\n\n") if t.strip()]
        texts += extra_texts
        tags += [None] * len(extra_texts)
    size = sum(len(t.encode()) for t in texts)
    if size < MIN_TEXT_BYTES:
        raise JobFailed(
            f"the corpus has {size} bytes of text; at least {MIN_TEXT_BYTES} are needed "
            "(add content, widen the filter or send `corpus`)"
        )
    name = tenant_model_name("text_generator", job.owner())
    version = job.params.get("_version") or next_version(ctx.settings.models_dir, name)
    _pin_version(session, job, version)
    progress, should_stop = _hooks(ctx, job)
    config = RNNConfig(hidden=int(p.get("hidden", 256)), layers=int(p.get("layers", 2)))
    epochs, budget_s = p.get("epochs"), p.get("budget_s")
    if epochs is None and budget_s is None:
        budget_s = DEFAULT_TEXT_BUDGET_S
    try:
        manifest = train_text_generator(
            texts, ctx.settings.models_dir, name, version, tags=tags,
            epochs=epochs, budget_s=budget_s, config=config, progress=progress,
            should_stop=should_stop, checkpoint_dir=_checkpoint_dir(ctx, job),
            threads=_training_threads(ctx), extra={"tenant_id": job.tenant_id},
            overwrite=True,
        )  # fmt: skip
    except TrainingCancelled as exc:
        raise JobCancelled(str(exc)) from exc
    set_active_version(ctx.settings.models_dir, name, version)
    _record(session, job, manifest, name, "text_generator")
    return {"model": f"{name}:{version}", "metrics": manifest.metrics, "documents": len(texts)}


def train_image_generator_job(ctx: WorkerContext, session: Session, job: Job) -> dict[str, Any]:
    """Params: ``budget_s`` and/or ``steps`` (a cap; :data:`DEFAULT_IMAGE_BUDGET_S` seconds when
    neither is given), ``filter``, ``conditional`` (true: train on tags, false: never; absent:
    on tags when at least two qualify, see :func:`choose_tags`)."""
    from shared.imaging import open_image
    from workers.training.gan import TrainingCancelled, train_image_generator
    from workers.training.gan_metrics import tagger_features

    p = job.params
    items, images = [], []
    for item in _corpus_items(session, job, images=True):
        original = next((a for a in item.assets if a.role == "original"), None)
        if original is None:
            continue
        with ctx.storage.open(original.storage_key) as f:
            images.append(open_image(f))
        items.append(item)
    if len(images) < MIN_IMAGES:
        raise JobFailed(f"found {len(images)} images to train on; at least {MIN_IMAGES} are needed")
    labels, tag_names = None, None
    if p.get("conditional") is not False:
        labels, tag_names = choose_tags(_item_tags(session, job, items))
        if labels is None and p.get("conditional"):
            raise JobFailed(
                f"conditional training needs at least 2 tags on {MIN_TAG_IMAGES} or more of the "
                "images each; train without `conditional` or tag more images"
            )
    train_labels: list[int] | None = None
    if labels is not None:
        # Images without a qualifying tag sit out a conditional run.
        images = [im for im, y in zip(images, labels, strict=True) if y is not None]
        train_labels = [y for y in labels if y is not None]
    tagger = _image_tagger(ctx)
    name = tenant_model_name("image_generator", job.owner())
    version = p.get("_version") or next_version(ctx.settings.models_dir, name)
    _pin_version(session, job, version)
    progress, should_stop = _hooks(ctx, job)
    steps, budget_s = p.get("steps"), p.get("budget_s")
    if steps is None and budget_s is None:
        budget_s = DEFAULT_IMAGE_BUDGET_S
    try:
        manifest = train_image_generator(
            images, ctx.settings.models_dir, name, version,
            steps=None if steps is None else int(steps),
            budget_s=None if budget_s is None else float(budget_s),
            labels=train_labels, label_names=tag_names, progress=progress,
            should_stop=should_stop, checkpoint_dir=_checkpoint_dir(ctx, job),
            features=tagger_features(tagger) if tagger else None,
            embed_name=tagger.ref if tagger else None, threads=_training_threads(ctx),
            extra={"tenant_id": job.tenant_id}, overwrite=True,
        )  # fmt: skip
    except TrainingCancelled as exc:
        raise JobCancelled(str(exc)) from exc
    set_active_version(ctx.settings.models_dir, name, version)
    _record(session, job, manifest, name, "image_generator")
    return {
        "model": f"{name}:{version}",
        "metrics": manifest.metrics,
        "images": len(images),
        "tags": tag_names or [],
    }


def _item_tags(
    session: Session,
    job: Job,
    items: list[ContentItem],
    origins: tuple[TagOrigin, ...] | None = None,
) -> list[set[str]]:
    """The names of each item's tags: of the given origins, or every one not rejected."""
    by_item: dict[str, set[str]] = {item.id: set() for item in items}
    origin_rule = Tag.origin.in_(origins) if origins else Tag.origin != TagOrigin.rejected
    rows = session.execute(
        select(Tag.content_id, Tag.name).where(
            Tag.tenant_id == job.tenant_id, Tag.content_id.in_(list(by_item)), origin_rule
        )
    )
    for content_id, tag in rows:
        by_item[content_id].add(tag)
    return [by_item[item.id] for item in items]


def _text_tags(
    session: Session, job: Job, items: list[ContentItem], names: list[str] | None
) -> list[set[str]]:
    """Each item's tags that may become control codes: the named ones, or else those a person
    set or accepted. Automatic tags are left out by default: keyphrases such as a character's
    name would otherwise outbid the sections a CMS means (the rarest qualifying tag wins)."""
    if not names:
        return _item_tags(session, job, items, HUMAN_ORIGINS)
    wanted = {str(n).strip().lower() for n in names}
    return [t & wanted for t in _item_tags(session, job, items)]


def choose_tags(
    tags: list[set[str]], *, min_items: int = MIN_TAG_IMAGES, max_tags: int = MAX_GAN_TAGS
) -> tuple[list[int | None] | None, list[str] | None]:
    """Label per item (an image of a conditional GAN, a document of the text generator), or
    (None, None) when fewer than two tags qualify.

    A tag qualifies with ``min_items`` items (the ``max_tags`` most frequent, ties by name).
    An item with several qualifying tags gets the rarest (ties by name), so broad tags such as
    "animal" do not swallow the specific ones; one with none gets None and sits out.
    """
    counts: dict[str, int] = {}
    for names in tags:
        for t in names:
            counts[t] = counts.get(t, 0) + 1
    ranked = sorted((t for t, c in counts.items() if c >= min_items), key=lambda t: (-counts[t], t))
    chosen = sorted(ranked[:max_tags])
    while True:
        picks = [min((t for t in names if t in chosen), key=lambda t: (counts[t], t), default=None)
                 for names in tags]  # fmt: skip
        # A broad tag can lose most of its images to rarer ones; below the minimum it goes.
        kept = [t for t in chosen if picks.count(t) >= min_items]
        if kept == chosen:
            break
        chosen = kept
    if len(chosen) < 2:
        return None, None
    return [None if t is None else chosen.index(t) for t in picks], chosen


def _training_threads(ctx: WorkerContext) -> int:
    return ctx.settings.training_threads or os.cpu_count() or 1


def _pin_version(session: Session, job: Job, version: str) -> None:
    # A resumed run (worker died) must publish the same version it started.
    if job.params.get("_version") != version:
        job.params = {**job.params, "_version": version}
        session.commit()


def _image_tagger(ctx: WorkerContext) -> Any:
    from shared.model_versions import ModelError
    from workers.tagging.image import ImageTagger

    try:
        return ctx.registry.get(ctx.settings.image_model, ImageTagger)
    except ModelError:
        return None


# Without these, the app-wide task limit (task_time_limit_s: minutes, for tagging and
# generation) would fail any training longer than five minutes, whatever its budget_s.
_limit = worker_settings().training_time_limit_s


@app.task(name=TRAIN_TEXT_GENERATOR.task, bind=True, soft_time_limit=_limit, time_limit=_limit + 60)
def train_text_generator_task(self: Task[Any, Any], job_id: str) -> str | None:
    return run_task(self, job_id, train_text_generator_job)


@app.task(
    name=TRAIN_IMAGE_GENERATOR.task, bind=True, soft_time_limit=_limit, time_limit=_limit + 60
)
def train_image_generator_task(self: Task[Any, Any], job_id: str) -> str | None:
    return run_task(self, job_id, train_image_generator_job)

"""Celery tasks of the ``generation`` queue: short, so they never wait behind training."""

from __future__ import annotations

import io
from typing import Any

from celery import Task
from sqlalchemy.orm import Session

from shared.db.models import Asset, ContentItem, ContentKind, Job
from shared.model_versions import resolve_model
from shared.schemas.generation import DEFAULT_TRUNCATION
from shared.storage import BlobSource, ensure_stored, put_remembered
from shared.tasks import GENERATE_IMAGES, GENERATE_TEXT
from workers.celery_app import app
from workers.context import WorkerContext
from workers.jobs import run_task
from workers.tagging.pipeline import tag_items


def generate_text_job(ctx: WorkerContext, session: Session, job: Job) -> dict[str, Any]:
    from workers.generation.text import TextGenerator

    p = job.params
    asked = p.get("model_version")
    name, version = resolve_model(ctx.settings.models_dir, "text_generator", job.owner(), asked)
    # The active version (None) may fall back to an older one if corrupt; an asked-for one not.
    model = ctx.registry.get(name, TextGenerator, version=version if asked else None)
    texts = model.generate(
        p.get("prompt", ""),
        max_length=int(p.get("max_length", 200)),
        temperature=float(p.get("temperature", 1.0)),
        top_k=int(p.get("top_k", 0)),
        top_p=float(p.get("top_p", 1.0)),
        seed=p.get("seed"),
        n=int(p.get("n", 1)),
        stop=list(p.get("stop") or []) or None,
        tag=p.get("tag"),
    )
    return {"texts": texts, "model": model.ref, "seed": p.get("seed"), "tag": p.get("tag")}


def generate_images_job(ctx: WorkerContext, session: Session, job: Job) -> dict[str, Any]:
    """Generate, store each image as `generated` content, then tag them in one batch."""
    from workers.generation.image import ImageGenerator

    p = job.params
    asked = p.get("model_version")
    name, version = resolve_model(ctx.settings.models_dir, "image_generator", job.owner(), asked)
    # The active version (None) may fall back to an older one if corrupt; an asked-for one not.
    model = ctx.registry.get(name, ImageGenerator, version=version if asked else None)
    truncation = float(p.get("truncation", DEFAULT_TRUNCATION))
    if p.get("mode") == "interpolate":
        images = model.interpolate(
            int(p["seed_a"]), int(p["seed_b"]), int(p["steps"]), truncation=truncation,
            tag=p.get("tag"),
        )  # fmt: skip
        metas = [
            {"seed_a": p["seed_a"], "seed_b": p["seed_b"], "step": i, "steps": p["steps"]}
            for i in range(len(images))
        ]
    else:
        # A tag on a model trained without tags is a ValueError: the job fails, the API 422s.
        images = model.generate(
            int(p["n"]), seed=int(p["seed"]), truncation=truncation, tag=p.get("tag")
        )
        metas = [{"seed": p["seed"], "index": i} for i in range(len(images))]
        if p.get("tag") is not None:
            metas = [{**m, "tag": p["tag"]} for m in metas]
    items = []
    written: list[BlobSource] = []
    for image, meta in zip(images, metas, strict=True):
        buf = io.BytesIO()
        image.save(buf, "PNG", optimize=True)
        blob = put_remembered(ctx.storage, buf.getvalue(), written)
        item = ContentItem(
            tenant_id=job.tenant_id,
            kind=ContentKind.generated,
            title=None,
            meta={**meta, "model": model.manifest.name, "model_version": model.manifest.version,
                  "truncation": truncation, "job_id": job.id},
            assets=[],
            tags=[],
        )  # fmt: skip
        item.assets.append(
            Asset.stored(blob, role="original", mime_type="image/png", width=image.width,
                         height=image.height)
        )  # fmt: skip
        session.add(item)
        items.append(item)
    session.flush()
    ids = [i.id for i in items]
    # Commit before tagging so the images are kept even if the tagger is missing.
    session.commit()
    ensure_stored(ctx.storage, written)
    tagging = tag_items(ctx, session, items)
    return {"content_ids": ids, "model": model.ref, "tags": tagging["tags"]}


@app.task(name=GENERATE_TEXT.task, bind=True)
def generate_text(self: Task[Any, Any], job_id: str) -> str | None:
    return run_task(self, job_id, generate_text_job)


@app.task(name=GENERATE_IMAGES.task, bind=True)
def generate_images(self: Task[Any, Any], job_id: str) -> str | None:
    return run_task(self, job_id, generate_images_job)

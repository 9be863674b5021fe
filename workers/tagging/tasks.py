"""Celery tasks of the ``tagging`` queue (thin: take a job id, delegate to plain functions)."""

from __future__ import annotations

from typing import Any

from celery import Task
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.models import ContentItem, Job
from shared.tasks import TAG_BATCH, TAG_CONTENT
from workers.celery_app import app
from workers.context import WorkerContext
from workers.jobs import JobFailed, run_task
from workers.tagging.pipeline import tag_items


def tag_content_job(ctx: WorkerContext, session: Session, job: Job) -> dict[str, Any]:
    item = session.get(ContentItem, job.content_id) if job.content_id else None
    if item is None:
        raise JobFailed("the content item was deleted before it could be tagged")
    return tag_items(ctx, session, [item])


def tag_batch_job(ctx: WorkerContext, session: Session, job: Job) -> dict[str, Any]:
    ids = list(job.params.get("content_ids", []))
    items = session.scalars(
        select(ContentItem).where(ContentItem.id.in_(ids), ContentItem.tenant_id == job.tenant_id)
    ).all()
    if not items:
        raise JobFailed("every content item of this batch was deleted before tagging")
    order = {cid: i for i, cid in enumerate(ids)}
    return tag_items(ctx, session, sorted(items, key=lambda it: order[it.id]))


@app.task(name=TAG_CONTENT.task, bind=True)
def tag_content(self: Task[Any, Any], job_id: str) -> str | None:
    return run_task(self, job_id, tag_content_job)


@app.task(name=TAG_BATCH.task, bind=True)
def tag_batch(self: Task[Any, Any], job_id: str) -> str | None:
    return run_task(self, job_id, tag_batch_job)

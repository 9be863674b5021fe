"""Signed job notifications to the tenant's webhooks, retried with backoff and jitter.

Each delivery is a POST of ``{"event": "job.finished", "job": {...}}`` with the headers
``X-Atelier-Event``, ``X-Atelier-Delivery`` (unique id) and ``X-Atelier-Signature:
sha256=<hex HMAC of the raw body with the webhook's secret>``. Receivers should verify the
signature and treat deliveries as at-least-once (deduplicate by delivery id).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from typing import Any

import httpx
from celery import Task
from sqlalchemy import select

from shared.db.models import Job, Webhook
from shared.schemas.jobs import JobPublic
from workers.celery_app import app
from workers.context import WorkerContext, get_context

log = logging.getLogger(__name__)

DELIVER_TASK = "atelier.deliver_webhook"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def notify_job_finished(ctx: WorkerContext, job_id: str) -> int:
    """Queue one delivery per matching webhook; returns how many were queued."""
    with ctx.session() as s:
        job = s.get(Job, job_id)
        # System jobs (bundled model builds) belong to no tenant, so to no tenant's webhooks.
        if job is None or job.tenant_id is None:
            return 0
        hooks = s.scalars(
            select(Webhook).where(Webhook.tenant_id == job.tenant_id, Webhook.active.is_(True))
        ).all()
        targets = [h.id for h in hooks if not h.job_types or job.type in h.job_types]
    for hook_id in targets:
        app.send_task(DELIVER_TASK, kwargs={"webhook_id": hook_id, "job_id": job_id})
    return len(targets)


def build_delivery(ctx: WorkerContext, webhook_id: str, job_id: str) -> tuple[str, dict, bytes]:
    with ctx.session() as s:
        hook = s.get(Webhook, webhook_id)
        job = s.get(Job, job_id)
        if hook is None or job is None or not hook.active:
            raise LookupError("webhook or job is gone")
        payload: dict[str, Any] = {
            "event": "job.finished",
            "job": JobPublic.model_validate(job, from_attributes=True).model_dump(mode="json"),
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "content-type": "application/json",
            "user-agent": "atelier-webhooks/1",
            "x-atelier-event": "job.finished",
            "x-atelier-delivery": str(uuid.uuid4()),
            "x-atelier-signature": sign(hook.secret, body),
        }
        return hook.url, headers, body


@app.task(
    name=DELIVER_TASK,
    bind=True,
    autoretry_for=(httpx.HTTPError,),
    retry_backoff=5,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=8,
)
def deliver_webhook(self: Task, webhook_id: str, job_id: str) -> int | None:
    try:
        url, headers, body = build_delivery(get_context(), webhook_id, job_id)
    except LookupError:
        return None
    response = httpx.post(url, content=body, headers=headers, timeout=10.0)
    if response.status_code >= 500 or response.status_code == 429:
        # Server-side trouble is worth retrying; a 4xx means the receiver refused it for good.
        raise httpx.HTTPStatusError(
            f"webhook answered {response.status_code}", request=response.request, response=response
        )
    return response.status_code

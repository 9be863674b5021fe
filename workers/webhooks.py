"""Signed job notifications to the tenant's webhooks, retried with backoff and jitter.

Each delivery is a POST of ``{"event": "job.finished", "job": {...}}`` with the headers
``X-Atelier-Event``, ``X-Atelier-Delivery`` (unique id), ``X-Atelier-Timestamp`` and
``X-Atelier-Signature`` (shared/webhooks.py: an HMAC over the timestamp and the raw body).
Receivers should verify both (``shared.webhooks.verify_signature``) and treat deliveries as
at-least-once (deduplicate by delivery id). The target's name is resolved and checked at every
delivery (no loopback, private or metadata addresses unless allowed); a refused target fails the
delivery with the reason in the log, without a request and without retries.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from celery import Task
from sqlalchemy import select

from shared import webhooks
from shared.db.models import Job, Webhook
from shared.schemas.jobs import JobPublic
from workers.celery_app import app
from workers.context import WorkerContext, get_context

log = logging.getLogger(__name__)

DELIVER_TASK = "atelier.deliver_webhook"


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


def build_delivery(
    ctx: WorkerContext, webhook_id: str, job_id: str
) -> tuple[str, dict[str, str], bytes]:
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
            **webhooks.sign(hook.secret, body),
        }
        return hook.url, headers, body


def pinned_request(url: str, *, allow_private: bool) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL with the host replaced by an address checked now, the Host header and the TLS
    server name: the connection goes where the check looked, whatever DNS answers next.

    Raises ``webhooks.TargetRefused`` (and ``OSError`` when the name does not resolve).
    """
    ip = webhooks.checked_addresses(url, allow_private=allow_private)[0]
    parts = urlsplit(url)
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    netloc = f"{host}:{parts.port}" if parts.port else host
    assert parts.hostname is not None
    return (
        urlunsplit(parts._replace(netloc=netloc)),
        {"host": parts.netloc.rsplit("@", 1)[-1]},
        {"sni_hostname": parts.hostname},
    )


def deliver(ctx: WorkerContext, webhook_id: str, job_id: str) -> int | None:
    """POST one notification; its HTTP status, or None when the webhook or job is gone.

    Raises ``webhooks.TargetRefused`` for a target that must not be called (nothing is sent),
    ``httpx.HTTPError`` for failures worth retrying.
    """
    try:
        url, headers, body = build_delivery(ctx, webhook_id, job_id)
    except LookupError:
        return None
    try:
        target, host, extensions = pinned_request(
            url, allow_private=ctx.settings.webhook_allow_private_targets
        )
    except OSError as exc:
        # DNS trouble may pass: retried like a refused connection.
        raise httpx.ConnectError(f"cannot resolve the webhook host: {exc}") from exc
    with httpx.Client(timeout=10.0) as client:
        response = client.post(
            target, content=body, headers={**headers, **host}, extensions=extensions
        )
    if response.status_code >= 500 or response.status_code == 429:
        # Server-side trouble is worth retrying; a 4xx means the receiver refused it for good.
        raise httpx.HTTPStatusError(
            f"webhook answered {response.status_code}", request=response.request, response=response
        )
    return response.status_code


@app.task(
    name=DELIVER_TASK,
    bind=True,
    autoretry_for=(httpx.HTTPError,),
    retry_backoff=5,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=8,
)
def deliver_webhook(self: Task[Any, Any], webhook_id: str, job_id: str) -> int | None:
    try:
        return deliver(get_context(), webhook_id, job_id)
    except webhooks.TargetRefused as exc:
        # Not retried: the address will not become acceptable by waiting.
        log.warning("webhook %s: delivery of job %s refused: %s", webhook_id, job_id, exc)
        raise

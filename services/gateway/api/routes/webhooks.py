"""Webhooks: the tenant's endpoints notified when a job finishes (admin scope)."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Response
from sqlalchemy import func, select

from services.gateway.api.deps import AdminDep, SessionDep, SettingsDep
from shared.db.models import Webhook
from shared.http import ApiError
from shared.schemas.webhooks import WebhookCreate, WebhookCreated, WebhookPublic
from shared.tasks import JOB_TYPES
from shared.webhooks import registration_problem

router = APIRouter(prefix="/v1", tags=["webhooks"])

MAX_WEBHOOKS = 10


def _public(h: Webhook) -> WebhookPublic:
    return WebhookPublic(
        id=h.id, url=h.url, job_types=list(h.job_types), active=h.active, created_at=h.created_at
    )


@router.post("/webhooks", status_code=201, response_model=WebhookCreated)
def create_webhook(
    body: WebhookCreate, principal: AdminDep, session: SessionDep, settings: SettingsDep
) -> WebhookCreated:
    unknown = sorted(set(body.job_types) - set(JOB_TYPES))
    if unknown:
        raise ApiError(422, f"unknown job types {unknown}", details={"allowed": sorted(JOB_TYPES)})
    # Checked again after DNS resolution at every delivery (shared/webhooks.py).
    problem = registration_problem(
        str(body.url), allow_private=settings.webhook_allow_private_targets
    )
    if problem:
        raise ApiError(422, f"url: {problem}", details={"loc": ["url"]})
    count = session.scalar(
        select(func.count()).select_from(Webhook).where(Webhook.tenant_id == principal.tenant_id)
    )
    if (count or 0) >= MAX_WEBHOOKS:
        raise ApiError(409, f"a tenant can have at most {MAX_WEBHOOKS} webhooks")
    hook = Webhook(
        tenant_id=principal.tenant_id,
        url=str(body.url),
        secret=secrets.token_urlsafe(32),
        job_types=sorted(set(body.job_types)),
    )
    session.add(hook)
    session.commit()
    return WebhookCreated(**_public(hook).model_dump(), secret=hook.secret)


@router.get("/webhooks", response_model=list[WebhookPublic])
def list_webhooks(principal: AdminDep, session: SessionDep) -> list[WebhookPublic]:
    hooks = session.scalars(
        select(Webhook).where(Webhook.tenant_id == principal.tenant_id).order_by(Webhook.created_at)
    ).all()
    return [_public(h) for h in hooks]


@router.delete("/webhooks/{webhook_id}", status_code=204)
def delete_webhook(webhook_id: str, principal: AdminDep, session: SessionDep) -> Response:
    hook = session.get(Webhook, webhook_id)
    if hook is None or hook.tenant_id != principal.tenant_id:
        raise ApiError(404, f"webhook {webhook_id} not found")
    session.delete(hook)
    session.commit()
    return Response(status_code=204)

"""Recommendations: ingest interactions, configure and train models, ask for recommendations.

Serving lives in the recommender service; the gateway authenticates the caller, then forwards
the request over HTTP with the tenant id in ``X-Atelier-Tenant``. The recommender trusts that
header, which is why it listens on loopback (or a private network) only.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from services.gateway import model_versions
from services.gateway.api.deps import CeleryDep, ReaderDep, SessionDep, SettingsDep, WriterDep
from services.gateway.interactions import ingest
from services.gateway.recommender_client import RecommenderClient
from services.gateway.user_history import user_history
from shared.http import ApiError
from shared.jobs import new_job, publish
from shared.recommender_config import get_config, put_config
from shared.schemas.model_versions import ModelVersionPublic, TrainAccepted
from shared.schemas.recommendations import (
    TENANT_HEADER,
    InteractionsAccepted,
    RecommendationList,
    RecommenderConfigIn,
    RecommenderConfigPublic,
    TrainRequest,
    UserHistory,
)
from shared.tasks import TRAIN_RECOMMENDER

router = APIRouter(prefix="/v1", tags=["recommendations"])


INTERACTIONS_DOC = {
    "requestBody": {
        "content": {
            "application/json": {
                "example": {
                    "events": [
                        {
                            "user_id": "cms-user-17",
                            "item_id": "article-42",
                            "event_type": "like",
                            "timestamp": "2024-05-01T12:00:00Z",
                            "event_id": "evt-0001",
                        }
                    ]
                }
            }
        }
    }
}


@router.post(
    "/interactions",
    response_model=InteractionsAccepted,
    openapi_extra=INTERACTIONS_DOC,
    summary="Store up to 10,000 interaction events; all or nothing, idempotent by event_id",
)
async def post_interactions(
    request: Request, principal: WriterDep, session: SessionDep, settings: SettingsDep
) -> InteractionsAccepted:
    try:
        body = await request.json()
    except ValueError as exc:
        raise ApiError(422, f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict) or "events" not in body:
        raise ApiError(422, 'send a JSON object {"events": [...]}')

    def _run() -> InteractionsAccepted:
        weights = get_config(session, tenant_id=principal.tenant_id).event_weights
        res = ingest(
            session,
            tenant_id=principal.tenant_id,
            raw_events=body["events"],
            event_weights=weights,
            max_events=settings.max_interaction_events,
        )
        return InteractionsAccepted(
            received=res.received,
            stored=res.stored,
            duplicates=res.duplicates,
            items_created=res.items_created,
        )

    # Validation and the bulk insert are CPU and I/O bound; keep them off the event loop.
    return await run_in_threadpool(_run)


@router.get("/recommender/config", response_model=RecommenderConfigPublic)
def read_config(principal: ReaderDep, session: SessionDep) -> RecommenderConfigPublic:
    cfg = get_config(session, tenant_id=principal.tenant_id)
    return RecommenderConfigPublic(
        event_weights=cfg.event_weights,
        half_life_days=cfg.half_life_days,
        trending_half_life_days=cfg.trending_half_life_days,
    )


@router.put("/recommender/config", response_model=RecommenderConfigPublic)
def write_config(
    body: RecommenderConfigIn, principal: WriterDep, session: SessionDep
) -> RecommenderConfigPublic:
    cfg = put_config(
        session,
        tenant_id=principal.tenant_id,
        event_weights=body.event_weights,
        half_life_days=body.half_life_days,
        trending_half_life_days=body.trending_half_life_days,
    )
    return RecommenderConfigPublic(
        event_weights=cfg.event_weights,
        half_life_days=cfg.half_life_days,
        trending_half_life_days=cfg.trending_half_life_days,
    )


@router.post("/recommender/train", status_code=202, response_model=TrainAccepted)
def train(
    principal: WriterDep,
    session: SessionDep,
    celery: CeleryDep,
    body: TrainRequest | None = None,
) -> TrainAccepted:
    body = body or TrainRequest()
    job = new_job(
        session,
        tenant_id=principal.tenant_id,
        job_type=TRAIN_RECOMMENDER.name,
        params=body.model_dump(exclude_none=True),
    )
    session.commit()
    publish(session, celery, job)
    return TrainAccepted(job_id=job.id, status=job.status)


@router.get("/recommender/models", response_model=list[ModelVersionPublic])
def list_models(principal: ReaderDep, session: SessionDep) -> list[ModelVersionPublic]:
    return model_versions.recommender_versions(session, tenant_id=principal.tenant_id)


@router.post("/recommender/models/{version}:activate", response_model=ModelVersionPublic)
def activate_model(
    version: str, principal: WriterDep, session: SessionDep, settings: SettingsDep
) -> ModelVersionPublic:
    """Serve this version from now on (roll back or forward); the recommender follows within
    its model check interval, without a restart."""
    return model_versions.activate_recommender_version(
        session, settings.models_dir, tenant_id=principal.tenant_id, version=version
    )


async def _forward(request: Request, tenant_id: str, path: str) -> Response:
    client: RecommenderClient = request.app.state.recommender
    status, ctype, body = await client.get(
        path, params=request.query_params.multi_items(), headers={TENANT_HEADER: tenant_id}
    )
    if status < 500 and ctype.startswith("application/json"):
        # The recommender already speaks our error shape and its 4xx (404, 422) are the
        # caller's: pass its JSON through as bytes instead of decoding and re-encoding it.
        return Response(body, status_code=status, media_type="application/json")
    try:
        payload: Any = json.loads(body)
    except ValueError as exc:
        raise ApiError(502, f"the recommender service answered {status} without JSON") from exc
    # Its 503 (its database unavailable) says retry later, and stays a 503 with its code.
    return JSONResponse(payload, status_code=status if status < 500 or status == 503 else 502)


@router.get(
    "/users/{user_id}/recommendations",
    response_model=RecommendationList,
    summary="Top items for a user (query: limit, exclude_seen, tag, kind, metadata, exclude, "
    "diversity, seed_items)",
)
async def user_recommendations(user_id: str, request: Request, principal: ReaderDep) -> Response:
    path = f"/internal/v1/users/{quote(user_id, safe='')}/recommendations"
    return await _forward(request, principal.tenant_id, path)


@router.get(
    "/items/{item_id}/similar",
    response_model=RecommendationList,
    summary="Items like this one (query: limit, mode=cf|content|blend, filters as above)",
)
async def similar_items(item_id: str, request: Request, principal: ReaderDep) -> Response:
    path = f"/internal/v1/items/{quote(item_id, safe='')}/similar"
    return await _forward(request, principal.tenant_id, path)


@router.get("/users/{user_id}/interactions", response_model=UserHistory)
def read_user_history(
    user_id: str,
    principal: ReaderDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> UserHistory:
    """The user's latest interaction events, newest first, with the items they were on."""
    return user_history(session, tenant_id=principal.tenant_id, user_id=user_id, limit=limit)

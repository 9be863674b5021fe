"""Content: upload (multipart or JSON), batch upload, read, list, delete, assets.

The routes parse and answer: the body is read by ``services.gateway.content_body``, uploads are
stored by ``services.gateway.renditions`` and rows written by ``services.gateway.content_items``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from anyio import to_thread
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse

from services.gateway import content_items, crud
from services.gateway.api.deps import (
    CeleryDep,
    DecodeLimiterDep,
    ReaderDep,
    SessionDep,
    SettingsDep,
    StorageDep,
    WriterDep,
)
from services.gateway.content_body import parse_batch, parse_single
from services.gateway.errors import NotFound
from shared.db.models import ContentKind
from shared.jobs import publish
from shared.schemas.content import (
    ContentAccepted,
    ContentBatchAccepted,
    ContentCreate,
    ContentPage,
    ContentPublic,
    TagLevel,
)
from shared.storage import CHUNK

router = APIRouter(prefix="/v1", tags=["content"])

OnConflict = Literal["error", "update"]

UPLOAD_DOC = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "text": {"type": "string"},
                        "title": {"type": "string"},
                        "external_id": {"type": "string"},
                        "metadata": {"type": "string", "description": "a JSON object"},
                    },
                }
            },
            "application/json": {"schema": ContentCreate.model_json_schema()},
        }
    }
}


@router.post(
    "/content",
    status_code=202,
    response_model=ContentAccepted,
    openapi_extra=UPLOAD_DOC,
    summary="Upload an image and/or text; tagging runs in the background",
)
async def create_content(
    request: Request,
    response: Response,
    principal: WriterDep,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    celery: CeleryDep,
    limiter: DecodeLimiterDep,
    on_conflict: Annotated[
        OnConflict,
        Query(description="same external_id again: `error` answers 409, `update` replaces it"),
    ] = "error",
) -> ContentAccepted:
    inc = await parse_single(request, settings)
    item, job, created = await content_items.create_item(
        session,
        storage,
        settings,
        limiter,
        tenant_id=principal.tenant_id,
        inc=inc,
        replace=on_conflict == "update",
    )
    # In a thread: a publish may wait on a stalled Redis for broker_timeout_s, and the event
    # loop must keep answering other requests meanwhile.
    await to_thread.run_sync(publish, session, celery, job)
    response.headers["Location"] = f"/v1/content/{item.id}"
    return ContentAccepted(id=item.id, job_id=job.id, status=job.status, created=created)


@router.post(
    "/content:batch",
    status_code=202,
    response_model=ContentBatchAccepted,
    summary="Upload up to 100 items at once; they are tagged with batched inference",
)
async def create_content_batch(
    request: Request,
    principal: WriterDep,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    celery: CeleryDep,
    limiter: DecodeLimiterDep,
) -> ContentBatchAccepted:
    """JSON ``{"items": [...]}`` for text, or multipart with repeated ``file`` parts and an
    optional ``items`` field: a JSON array of per-file fields, in the same order."""
    incoming = await parse_batch(request, settings)
    items, job = await content_items.create_batch(
        session, storage, settings, limiter, tenant_id=principal.tenant_id, incoming=incoming
    )
    await to_thread.run_sync(publish, session, celery, job)
    return ContentBatchAccepted(
        items=[
            ContentAccepted(id=i.id, job_id=job.id, status=job.status, created=True) for i in items
        ],
        job_id=job.id,
    )


LEVEL_HELP = (
    'only image model tags of this level: "class" for the model\'s specific classes, "concept"'
    " for parent concepts"
)


@router.get("/content/{content_id}", response_model=ContentPublic)
def read_content(
    content_id: str,
    principal: ReaderDep,
    session: SessionDep,
    min_score: Annotated[float, Query(ge=0.0, le=1.0)] = 0.0,
    limit: Annotated[int | None, Query(ge=1, le=1000, description="max tags")] = None,
    level: Annotated[TagLevel | None, Query(description=LEVEL_HELP)] = None,
) -> ContentPublic:
    item = crud.get_content(session, tenant_id=principal.tenant_id, content_id=content_id)
    return crud.content_public(item, min_score=min_score, tag_limit=limit, level=level)


@router.get("/content", response_model=ContentPage)
def list_content(
    principal: ReaderDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
    kind: ContentKind | None = None,
    tag: str | None = None,
    min_score: Annotated[float, Query(ge=0.0, le=1.0)] = 0.0,
    level: Annotated[TagLevel | None, Query(description=LEVEL_HELP)] = None,
) -> ContentPage:
    items, next_cursor = crud.list_content(
        session,
        tenant_id=principal.tenant_id,
        limit=limit,
        cursor=cursor,
        kind=kind.value if kind else None,
        tag=tag,
    )
    return ContentPage(
        items=[crud.content_public(i, min_score=min_score, level=level) for i in items],
        next_cursor=next_cursor,
    )


@router.delete("/content/{content_id}", status_code=204)
def delete_content(
    content_id: str, principal: WriterDep, session: SessionDep, storage: StorageDep
) -> Response:
    content_items.delete_item(
        session, storage, tenant_id=principal.tenant_id, content_id=content_id
    )
    return Response(status_code=204)


@router.get("/content/{content_id}/assets/{role}", response_class=FileResponse)
def download_asset(
    content_id: str, role: str, principal: ReaderDep, session: SessionDep, storage: StorageDep
) -> Response:
    item = crud.get_content(session, tenant_id=principal.tenant_id, content_id=content_id)
    asset = next((a for a in item.assets if a.role == role), None)
    if asset is None or role not in crud.PUBLIC_ASSET_ROLES:
        raise NotFound(f"content {content_id} has no {role!r} asset")
    # An upload may be a polyglot (a valid JPEG with HTML or a ZIP appended): browsers must
    # take it as the sniffed image type it was stored as, never guess another.
    headers = {"X-Content-Type-Options": "nosniff"}
    local = storage.local_path(asset.storage_key)
    if local is not None:
        return FileResponse(local, media_type=asset.mime_type, headers=headers)
    # A remote store (S3): streamed through, opened first so that a missing blob is an error.
    blob = storage.open(asset.storage_key)

    def chunks() -> Iterator[bytes]:
        with blob:
            yield from iter(lambda: blob.read(CHUNK), b"")

    return StreamingResponse(
        chunks(),
        media_type=asset.mime_type,
        headers={**headers, "content-length": str(asset.byte_size)},
    )

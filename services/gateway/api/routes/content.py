"""Content: upload (multipart or JSON), batch upload, read, list, delete, assets."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import anyio
from anyio import to_thread
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import ValidationError
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from starlette.datastructures import UploadFile

from services.gateway import crud
from services.gateway.api.deps import (
    CeleryDep,
    DecodeLimiterDep,
    ReaderDep,
    SessionDep,
    SettingsDep,
    StorageDep,
    WriterDep,
)
from services.gateway.uploads import ImageInfo, read_image
from shared.config import GatewaySettings
from shared.db.models import Asset, ContentItem, ContentKind, ContentStatus, Embedding
from shared.http import ApiError
from shared.imaging import WORKING_ROLE, Rendition, make_renditions
from shared.jobs import new_job, publish
from shared.schemas.content import (
    ContentAccepted,
    ContentBatchAccepted,
    ContentBatchCreate,
    ContentCreate,
    ContentPage,
    ContentPublic,
    TagLevel,
)
from shared.storage import (
    BlobSource,
    BlobStorage,
    PayloadTooLarge,
    StoredBlob,
    delete_unreferenced_blobs,
    ensure_stored,
)

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


@dataclass
class Incoming:
    fields: ContentCreate
    upload: UploadFile | None = None
    info: ImageInfo | None = None
    blob: StoredBlob | None = None
    renditions: list[tuple[Rendition, StoredBlob]] = field(default_factory=list)
    phash: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def blob_keys(self) -> set[str]:
        return {key for key, _ in self.blob_sources()}

    def blob_sources(self) -> list[BlobSource]:
        """Each stored blob with a way to make its bytes again (shared/storage.ensure_stored)."""
        out: list[BlobSource] = [
            (blob.key, lambda r=rendition: r.data) for rendition, blob in self.renditions
        ]
        if self.blob is not None and self.upload is not None:
            f = self.upload.file
            out.append((self.blob.key, lambda: (f.seek(0), f.read())[1]))
        return out


def _check_fields(fields: ContentCreate, settings: GatewaySettings, *, has_file: bool) -> None:
    text = fields.text
    if text is not None and len(text) > settings.max_text_chars:
        raise ApiError(
            413, f"text has {len(text)} characters; the limit is {settings.max_text_chars}"
        )
    if not has_file and not (text and text.strip()) and not (fields.title and fields.title.strip()):
        raise ApiError(422, "empty content: send an image `file`, `text` or a `title`")
    if len(json.dumps(fields.metadata).encode()) > settings.max_metadata_bytes:
        raise ApiError(413, f"metadata exceeds {settings.max_metadata_bytes} bytes")


def _content_fields(data: dict[str, Any]) -> ContentCreate:
    try:
        return ContentCreate.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(
            422,
            f"{where}: {first['msg']}",
            details=[{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()],
        ) from exc


async def _read_json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError as exc:
        raise ApiError(422, f"the body is not valid JSON: {exc}") from exc


async def _read_form(request: Request, settings: GatewaySettings, *, max_files: int) -> Any:
    try:
        return await request.form(
            max_files=max_files,
            max_fields=50 + max_files * 5,
            max_part_size=settings.max_text_chars * 4 + settings.max_metadata_bytes,
        )
    except ApiError:
        raise
    except Exception as exc:  # starlette raises MultiPartException / HTTPException(400)
        raise ApiError(422, f"malformed multipart body: {getattr(exc, 'detail', exc)}") from exc


def _form_str(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None or isinstance(value, str):
        return value
    raise ApiError(422, f"`{name}` must be a plain form field, not a file")


async def _parse_single(request: Request, settings: GatewaySettings) -> Incoming:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        body = await _read_json(request)
        if not isinstance(body, dict):
            raise ApiError(422, "the JSON body must be an object")
        fields = _content_fields(body)
        _check_fields(fields, settings, has_file=False)
        return Incoming(fields=fields)
    if ctype.startswith("multipart/form-data"):
        form = await _read_form(request, settings, max_files=1)
        upload = form.get("file")
        if upload is not None and not isinstance(upload, UploadFile):
            raise ApiError(422, "`file` must be a file part")
        metadata = crud.parse_metadata(
            _form_str(form, "metadata"), max_bytes=settings.max_metadata_bytes
        )
        fields = _content_fields(
            {
                "external_id": _form_str(form, "external_id") or None,
                "title": _form_str(form, "title"),
                "text": _form_str(form, "text"),
                "metadata": metadata,
            }
        )
        has_file = upload is not None and _upload_size(upload) > 0
        if upload is not None and not has_file:
            raise ApiError(422, "the uploaded file is empty")
        _check_fields(fields, settings, has_file=has_file)
        return Incoming(fields=fields, upload=upload if has_file else None)
    raise ApiError(
        415,
        "send multipart/form-data (with an optional image `file`) or application/json",
    )


def _upload_size(upload: UploadFile) -> int:
    if upload.size is not None:
        return upload.size
    f = upload.file
    pos = f.tell()
    f.seek(0, 2)
    size = f.tell()
    f.seek(pos)
    return size


def _store_upload(inc: Incoming, settings: GatewaySettings, storage: BlobStorage) -> None:
    """Validate and store one upload with its renditions (runs in a worker thread: decoding
    is CPU-bound and Pillow releases the GIL).

    The upload is decoded once, here (validation needs a decode anyway), and the working copy and
    thumbnail are made from that decode, so the tagging worker reads the working copy instead of
    decoding the original a second time (shared/imaging.py).
    """
    assert inc.upload is not None
    if _upload_size(inc.upload) > settings.max_upload_bytes:
        raise ApiError(413, f"the file exceeds {settings.max_upload_bytes} bytes")
    inc.info, image = read_image(
        inc.upload.file,
        max_pixels=settings.max_image_pixels,
        min_size=max(settings.working_copy_size, settings.thumbnail_size),
    )
    made = make_renditions(
        image,
        working_size=settings.working_copy_size,
        thumbnail_size=settings.thumbnail_size,
        thumbnail_format=settings.thumbnail_format,
    )
    try:
        inc.blob = storage.put_file(inc.upload.file, max_bytes=settings.max_upload_bytes)
    except PayloadTooLarge as exc:
        raise ApiError(413, f"the file exceeds {exc.limit} bytes") from exc
    for rendition in made.files:
        # A lost working copy is made again from the original: no fsync for it.
        durable = rendition.role != WORKING_ROLE
        inc.renditions.append((rendition, storage.put_bytes(rendition.data, durable=durable)))
    inc.phash = made.phash


def _apply(session: Any, item: ContentItem, inc: Incoming) -> set[str]:
    """Copy the incoming fields onto ``item``; return blob keys it no longer references."""
    f = inc.fields
    item.title = f.title
    item.text = f.text
    item.meta = f.metadata
    item.status = ContentStatus.pending
    dropped: set[str] = set()
    if inc.blob is not None and inc.info is not None:
        item.kind = ContentKind.image
        for asset in list(item.assets):
            dropped.add(asset.storage_key)
            item.assets.remove(asset)
        item.phash = inc.phash
        item.duplicate_of = None
        item.assets.append(
            Asset.stored(
                inc.blob,
                role="original",
                mime_type=inc.info.mime_type,
                width=inc.info.width,
                height=inc.info.height,
            )
        )
        for r, blob in inc.renditions:
            item.assets.append(
                Asset.stored(
                    blob, role=r.role, mime_type=r.mime_type, width=r.width, height=r.height
                )
            )
        if item.id:
            session.execute(delete(Embedding).where(Embedding.content_id == item.id))
    elif not item.assets:
        item.kind = ContentKind.text
    return dropped - inc.blob_keys()


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
    inc = await _parse_single(request, settings)
    existing = None
    if inc.fields.external_id:
        existing = crud.get_content_by_external_id(
            session, tenant_id=principal.tenant_id, external_id=inc.fields.external_id
        )
        if existing is not None and on_conflict == "error":
            raise _conflict(inc.fields.external_id, existing.id)
    if inc.upload is not None:
        await to_thread.run_sync(_store_upload, inc, settings, storage, limiter=limiter)
    item = existing or ContentItem(
        tenant_id=principal.tenant_id, external_id=inc.fields.external_id, assets=[], tags=[]
    )
    try:
        dropped = _apply(session, item, inc)
        if existing is None:
            session.add(item)
            session.flush()
        job = new_job(
            session, tenant_id=principal.tenant_id, job_type="tag_content", content_id=item.id
        )
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        _discard(session, storage, inc)
        raise _conflict(inc.fields.external_id or "", None) from exc
    except BaseException:
        session.rollback()
        _discard(session, storage, inc)
        raise
    ensure_stored(storage, inc.blob_sources())
    delete_unreferenced_blobs(session, storage, dropped)
    publish(session, celery, job)
    response.headers["Location"] = f"/v1/content/{item.id}"
    return ContentAccepted(id=item.id, job_id=job.id, status=job.status, created=existing is None)


def _conflict(external_id: str, existing_id: str | None) -> ApiError:
    return ApiError(
        409,
        f"content with external_id {external_id!r} already exists; "
        "retry with ?on_conflict=update to replace it",
        details={"external_id": external_id, "id": existing_id},
    )


def _discard(session: Any, storage: BlobStorage, inc: Incoming) -> None:
    if keys := inc.blob_keys():
        with contextlib.suppress(Exception):
            delete_unreferenced_blobs(session, storage, keys)


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
    incoming = await _parse_batch(request, settings)
    ext_ids = [i.fields.external_id for i in incoming if i.fields.external_id]
    if len(ext_ids) != len(set(ext_ids)):
        raise ApiError(422, "external_id values repeat within the batch")
    for idx, inc in enumerate(incoming):
        if inc.fields.external_id and crud.get_content_by_external_id(
            session, tenant_id=principal.tenant_id, external_id=inc.fields.external_id
        ):
            raise ApiError(
                409,
                f"items[{idx}]: external_id {inc.fields.external_id!r} already exists",
                details={"index": idx},
            )
    try:
        await _store_uploads(incoming, settings, storage, limiter)
        items = []
        for inc in incoming:
            item = ContentItem(
                tenant_id=principal.tenant_id,
                external_id=inc.fields.external_id,
                assets=[],
                tags=[],
            )
            _apply(session, item, inc)
            session.add(item)
            items.append(item)
        session.flush()
        job = new_job(
            session,
            tenant_id=principal.tenant_id,
            job_type="tag_batch",
            params={"content_ids": [i.id for i in items]},
        )
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        for inc in incoming:
            _discard(session, storage, inc)
        raise ApiError(409, "an external_id of this batch already exists") from exc
    except BaseException:
        session.rollback()
        for inc in incoming:
            _discard(session, storage, inc)
        raise
    ensure_stored(storage, [source for inc in incoming for source in inc.blob_sources()])
    publish(session, celery, job)
    return ContentBatchAccepted(
        items=[
            ContentAccepted(id=i.id, job_id=job.id, status=job.status, created=True) for i in items
        ],
        job_id=job.id,
    )


async def _store_uploads(
    incoming: list[Incoming],
    settings: GatewaySettings,
    storage: BlobStorage,
    limiter: anyio.CapacityLimiter,
) -> None:
    """Store a batch's uploads, decoding them in parallel (within ``limiter``). Every upload
    finishes before the first error, by position, is raised, so the caller can discard all
    the blobs written."""
    errors: dict[int, BaseException] = {}

    async def one(idx: int, inc: Incoming) -> None:
        try:
            await to_thread.run_sync(_store_upload, inc, settings, storage, limiter=limiter)
        except Exception as exc:
            errors[idx] = exc

    async with anyio.create_task_group() as tg:
        for idx, inc in enumerate(incoming):
            if inc.upload is not None:
                tg.start_soon(one, idx, inc)
    if errors:
        idx = min(errors)
        exc = errors[idx]
        if isinstance(exc, ApiError):
            exc.message = f"items[{idx}]: {exc.message}"
            exc.details = {"index": idx, **(exc.details or {})}
        raise exc


async def _parse_batch(request: Request, settings: GatewaySettings) -> list[Incoming]:
    ctype = request.headers.get("content-type", "")
    limit = settings.max_batch_items
    if ctype.startswith("application/json"):
        body = await _read_json(request)
        if (
            isinstance(body, dict)
            and isinstance(body.get("items"), list)
            and len(body["items"]) > limit
        ):
            raise ApiError(413, f"a batch holds at most {limit} items")
        try:
            batch = ContentBatchCreate.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ApiError(
                422, f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
            ) from exc
        out = []
        for idx, fields in enumerate(batch.items):
            try:
                _check_fields(fields, settings, has_file=False)
            except ApiError as exc:
                exc.message = f"items[{idx}]: {exc.message}"
                raise
            out.append(Incoming(fields=fields))
        return out
    if ctype.startswith("multipart/form-data"):
        form = await _read_form(request, settings, max_files=limit + 1)
        files = form.getlist("file")
        if len(files) > limit:
            raise ApiError(413, f"a batch holds at most {limit} items")
        if not files or not all(isinstance(f, UploadFile) for f in files):
            raise ApiError(422, "send one or more `file` parts")
        raw_items = _form_str(form, "items")
        specs: list[Any] = []
        if raw_items:
            try:
                specs = json.loads(raw_items)
            except json.JSONDecodeError as exc:
                raise ApiError(422, f"`items` is not valid JSON: {exc}") from exc
            if not isinstance(specs, list) or len(specs) != len(files):
                raise ApiError(422, "`items` must be a JSON array with one object per file")
        out = []
        for idx, upload in enumerate(files):
            spec = specs[idx] if specs else {}
            if not isinstance(spec, dict):
                raise ApiError(422, f"items[{idx}] must be an object")
            fields = _content_fields(spec)
            if _upload_size(upload) == 0:
                raise ApiError(422, f"items[{idx}]: the uploaded file is empty")
            _check_fields(fields, settings, has_file=True)
            out.append(Incoming(fields=fields, upload=upload))
        return out
    raise ApiError(415, "send application/json or multipart/form-data")


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
    item = crud.get_content(session, tenant_id=principal.tenant_id, content_id=content_id)
    keys = {a.storage_key for a in item.assets}
    session.delete(item)
    session.commit()
    delete_unreferenced_blobs(session, storage, keys)
    return Response(status_code=204)


@router.get("/content/{content_id}/assets/{role}", response_class=FileResponse)
def download_asset(
    content_id: str, role: str, principal: ReaderDep, session: SessionDep, storage: StorageDep
) -> FileResponse:
    item = crud.get_content(session, tenant_id=principal.tenant_id, content_id=content_id)
    asset = next((a for a in item.assets if a.role == role), None)
    if asset is None or role not in crud.PUBLIC_ASSET_ROLES:
        raise ApiError(404, f"content {content_id} has no {role!r} asset")
    return FileResponse(storage.path(asset.storage_key), media_type=asset.mime_type)

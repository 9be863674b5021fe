"""The body of a content upload, single or batch: JSON or multipart, checked against limits.

Parsing yields :class:`Incoming` items; nothing is stored or decoded here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from services.gateway import crud
from services.gateway.errors import Invalid, TooLarge, UnsupportedMedia
from services.gateway.uploads import ImageInfo
from shared.config import GatewaySettings
from shared.http import ApiError
from shared.imaging import Rendition
from shared.request_limits import loads_limited
from shared.schemas.content import ContentBatchCreate, ContentCreate
from shared.storage import BlobSource, StoredBlob


def _data_of(rendition: Rendition) -> Callable[[], bytes]:
    """A source for one rendition's bytes, bound now rather than by the loop variable."""
    return lambda: rendition.data


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
            (blob.key, _data_of(rendition)) for rendition, blob in self.renditions
        ]
        if self.blob is not None and self.upload is not None:
            f = self.upload.file
            out.append((self.blob.key, lambda: (f.seek(0), f.read())[1]))
        return out


def check_fields(fields: ContentCreate, settings: GatewaySettings, *, has_file: bool) -> None:
    text = fields.text
    if text is not None and len(text) > settings.max_text_chars:
        raise TooLarge(f"text has {len(text)} characters; the limit is {settings.max_text_chars}")
    if not has_file and not (text and text.strip()) and not (fields.title and fields.title.strip()):
        raise Invalid("empty content: send an image `file`, `text` or a `title`")
    if len(json.dumps(fields.metadata).encode()) > settings.max_metadata_bytes:
        raise TooLarge(f"metadata exceeds {settings.max_metadata_bytes} bytes")


def content_fields(data: dict[str, Any]) -> ContentCreate:
    try:
        return ContentCreate.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise Invalid(
            f"{where}: {first['msg']}",
            details=[{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()],
        ) from exc


async def read_json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError as exc:
        raise Invalid(f"the body is not valid JSON: {exc}") from exc


async def read_form(request: Request, settings: GatewaySettings, *, max_files: int) -> Any:
    try:
        return await request.form(
            max_files=max_files,
            max_fields=50 + max_files * 5,
            max_part_size=settings.max_text_chars * 4 + settings.max_metadata_bytes,
        )
    except ApiError:
        raise
    except Exception as exc:  # starlette raises MultiPartException / HTTPException(400)
        raise Invalid(f"malformed multipart body: {getattr(exc, 'detail', exc)}") from exc


def form_str(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None or isinstance(value, str):
        return value
    raise Invalid(f"`{name}` must be a plain form field, not a file")


async def parse_single(request: Request, settings: GatewaySettings) -> Incoming:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        body = await read_json(request)
        if not isinstance(body, dict):
            raise Invalid("the JSON body must be an object")
        fields = content_fields(body)
        check_fields(fields, settings, has_file=False)
        return Incoming(fields=fields)
    if ctype.startswith("multipart/form-data"):
        form = await read_form(request, settings, max_files=1)
        upload = form.get("file")
        if upload is not None and not isinstance(upload, UploadFile):
            raise Invalid("`file` must be a file part")
        metadata = crud.parse_metadata(
            form_str(form, "metadata"),
            max_bytes=settings.max_metadata_bytes,
            max_depth=settings.max_json_depth,
        )
        fields = content_fields(
            {
                "external_id": form_str(form, "external_id") or None,
                "title": form_str(form, "title"),
                "text": form_str(form, "text"),
                "metadata": metadata,
            }
        )
        has_file = upload is not None and upload_size(upload) > 0
        if upload is not None and not has_file:
            raise Invalid("the uploaded file is empty")
        check_fields(fields, settings, has_file=has_file)
        return Incoming(fields=fields, upload=upload if has_file else None)
    raise UnsupportedMedia(
        "send multipart/form-data (with an optional image `file`) or application/json",
    )


def upload_size(upload: UploadFile) -> int:
    if upload.size is not None:
        return upload.size
    f = upload.file
    pos = f.tell()
    f.seek(0, 2)
    size = f.tell()
    f.seek(pos)
    return size


async def parse_batch(request: Request, settings: GatewaySettings) -> list[Incoming]:
    ctype = request.headers.get("content-type", "")
    limit = settings.max_batch_items
    if ctype.startswith("application/json"):
        body = await read_json(request)
        if (
            isinstance(body, dict)
            and isinstance(body.get("items"), list)
            and len(body["items"]) > limit
        ):
            raise TooLarge(f"a batch holds at most {limit} items")
        try:
            batch = ContentBatchCreate.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise Invalid(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from exc
        out = []
        for idx, fields in enumerate(batch.items):
            try:
                check_fields(fields, settings, has_file=False)
            except ApiError as exc:
                exc.message = f"items[{idx}]: {exc.message}"
                raise
            out.append(Incoming(fields=fields))
        return out
    if ctype.startswith("multipart/form-data"):
        form = await read_form(request, settings, max_files=limit + 1)
        files = form.getlist("file")
        if len(files) > limit:
            raise TooLarge(f"a batch holds at most {limit} items")
        if not files or not all(isinstance(f, UploadFile) for f in files):
            raise Invalid("send one or more `file` parts")
        raw_items = form_str(form, "items")
        specs: list[Any] = []
        if raw_items:
            try:
                specs = loads_limited(raw_items, settings.max_json_depth)
            except ValueError as exc:
                raise Invalid(f"`items` is not valid JSON: {exc}") from exc
            if not isinstance(specs, list) or len(specs) != len(files):
                raise Invalid("`items` must be a JSON array with one object per file")
        out = []
        for idx, upload in enumerate(files):
            spec = specs[idx] if specs else {}
            if not isinstance(spec, dict):
                raise Invalid(f"items[{idx}] must be an object")
            fields = content_fields(spec)
            if upload_size(upload) == 0:
                raise Invalid(f"items[{idx}]: the uploaded file is empty")
            check_fields(fields, settings, has_file=True)
            out.append(Incoming(fields=fields, upload=upload))
        return out
    raise UnsupportedMedia("send application/json or multipart/form-data")

"""Storing uploads: the original and its renditions, decoded once, in worker threads."""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
from anyio import to_thread

from services.gateway.content_body import Incoming, upload_size
from services.gateway.errors import TooLarge
from services.gateway.uploads import read_image
from shared.config import GatewaySettings
from shared.http import ApiError
from shared.imaging import WORKING_ROLE, make_renditions
from shared.storage import BlobStorage, PayloadTooLarge, delete_unreferenced_blobs


def store_upload(inc: Incoming, settings: GatewaySettings, storage: BlobStorage) -> None:
    """Validate and store one upload with its renditions (runs in a worker thread: decoding
    is CPU-bound and Pillow releases the GIL).

    The upload is decoded once, here (validation needs a decode anyway), and the working copy and
    thumbnail are made from that decode, so the tagging worker reads the working copy instead of
    decoding the original a second time (shared/imaging.py).
    """
    assert inc.upload is not None
    if upload_size(inc.upload) > settings.max_upload_bytes:
        raise TooLarge(f"the file exceeds {settings.max_upload_bytes} bytes")
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
        raise TooLarge(f"the file exceeds {exc.limit} bytes") from exc
    for rendition in made.files:
        # A lost working copy is made again from the original: no fsync for it.
        durable = rendition.role != WORKING_ROLE
        inc.renditions.append((rendition, storage.put_bytes(rendition.data, durable=durable)))
    inc.phash = made.phash


async def store_uploads(
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
            await to_thread.run_sync(store_upload, inc, settings, storage, limiter=limiter)
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


def discard(session: Any, storage: BlobStorage, inc: Incoming) -> None:
    if keys := inc.blob_keys():
        with contextlib.suppress(Exception):
            delete_unreferenced_blobs(session, storage, keys)

"""Before any model runs: load assets, decode each image once, record renditions and pHash
duplicates, and the text each item is tagged on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session, selectinload

from shared.db.models import Asset, ContentItem, ContentStatus
from shared.imaging import WORKING_ROLE, decode_image, make_renditions
from shared.storage import BlobSource, put_remembered
from workers.context import WorkerContext
from workers.tagging.duplicates import DuplicateScan

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    item: ContentItem
    image: Any | None  # PIL image, decoded once per job
    text: str | None


def mark_content_failed(session: Session, content_id: str) -> None:
    item = session.get(ContentItem, content_id)
    if item is not None:
        item.status = ContentStatus.failed
        session.commit()


def prepare_images(
    ctx: WorkerContext,
    session: Session,
    items: Sequence[ContentItem],
    *,
    model_resize: int,
    written: list[BlobSource] | None = None,
) -> list[Any | None]:
    """Decode each image once for tagging, flag near-duplicates (one query for all the items),
    and make the thumbnail and pHash of items that arrived without them.

    An upload's working copy (made by the gateway from its one decode: shared/imaging.py) is
    read instead of the original whenever it holds the pixels a model of ``model_resize``
    needs; otherwise, or if it is missing or unreadable, the original decodes in JPEG draft mode
    at the smallest DCT scale that still serves the model and the thumbnail. Items without an
    original give ``None``. Blobs stored here are added to ``written``, for
    :func:`shared.storage.ensure_stored` once the rows are committed.
    """
    if not items:
        return []
    _load_assets(session, items)
    sink: list[BlobSource] = [] if written is None else written
    settings = ctx.settings
    need = max(settings.thumbnail_size, model_resize)
    out: list[Any | None] = []
    for item in items:
        assets = {a.role: a for a in item.assets}
        original = assets.get("original")
        if original is None:
            out.append(None)
            continue
        # Thumbnail and pHash show the whole frame: an item missing them decodes its original.
        needs_renditions = item.phash is None or "thumbnail" not in assets
        image = None
        if not needs_renditions:
            image = _read_working_copy(ctx, assets.get(WORKING_ROLE), original, model_resize)
        if image is None:
            with ctx.storage.open(original.storage_key) as f:
                image, (original.width, original.height) = decode_image(f, min_size=need)
        if needs_renditions:
            made = make_renditions(
                image,
                working_size=None,
                thumbnail_size=settings.thumbnail_size,
                thumbnail_format=settings.thumbnail_format,
            )
            item.phash = made.phash
            for r in made.files:
                if r.role not in assets:
                    blob = put_remembered(ctx.storage, r.data, sink)
                    item.assets.append(
                        Asset.stored(
                            blob, role=r.role, mime_type=r.mime_type, width=r.width, height=r.height
                        )
                    )
        out.append(image)
    # Once every pHash is known (the lookup is by their blocks); in batch order, so an item
    # can match an earlier one of the same batch.
    scan = DuplicateScan.load(session, items, max_distance=settings.phash_max_distance)
    for item, image in zip(items, out, strict=True):
        if image is not None:
            item.duplicate_of = scan.match(item, max_distance=settings.phash_max_distance)
    return out


def _read_working_copy(
    ctx: WorkerContext, working: Asset | None, original: Asset, model_resize: int
) -> Any | None:
    """The working copy as an RGB image, or None when there is none, it is too small for this
    model (unless it is the original's full centre square), or it cannot be read (it is not
    fsynced: a crash can lose it, and the original is still there)."""
    if working is None or not working.width or not working.height:
        return None
    size = (working.width, working.height)
    # A square smaller than the model's resize serves only if it was never scaled down.
    unscaled = working.width == min(original.width or 0, original.height or 0)
    if min(size) < model_resize and not unscaled:
        return None
    try:
        with ctx.storage.open(working.storage_key) as f:
            image, decoded_size = decode_image(f)
    except (OSError, SyntaxError, ValueError, KeyError) as exc:
        log.warning("working copy of %s unreadable, decoding the original: %s", original.id, exc)
        return None
    return image if decoded_size == size else None


def detach_working_copies(items: Sequence[ContentItem]) -> set[str]:
    """Remove tagged items' working-copy rows; return their blob keys, to delete (if nothing
    else points at them) once this is committed."""
    keys = set()
    for item in items:
        for asset in [a for a in item.assets if a.role == WORKING_ROLE]:
            keys.add(asset.storage_key)
            item.assets.remove(asset)
    return keys


def _load_assets(session: Session, items: Sequence[ContentItem]) -> None:
    """Load every item's assets with one query, not one lazy load (and autoflush) per item."""
    ids = [it.id for it in items if it.id is not None and "assets" in inspect(it).unloaded]
    if ids:
        session.scalars(
            select(ContentItem)
            .where(ContentItem.id.in_(ids))
            .options(selectinload(ContentItem.assets))
        ).all()


def item_text(item: ContentItem) -> str | None:
    parts = [p for p in (item.title, item.text) if p and p.strip()]
    return "\n\n".join(parts) if parts else None

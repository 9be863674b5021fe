"""Content rows: create or replace items from parsed uploads, all or nothing, and delete them.

A failed transaction leaves no blob behind that no row references (``renditions.discard``).
"""

from __future__ import annotations

from typing import Any

import anyio
from anyio import to_thread
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.gateway import crud
from services.gateway.content_body import Incoming
from services.gateway.errors import Conflict, Invalid
from services.gateway.renditions import discard, store_upload, store_uploads
from shared.config import GatewaySettings
from shared.db.models import Asset, ContentItem, ContentKind, ContentStatus, Embedding, Job
from shared.jobs import new_job
from shared.storage import BlobStorage, delete_unreferenced_blobs, ensure_stored
from shared.tasks import TAG_BATCH, TAG_CONTENT


def apply_incoming(session: Any, item: ContentItem, inc: Incoming) -> set[str]:
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


def external_id_conflict(external_id: str, existing_id: str | None) -> Conflict:
    return Conflict(
        f"content with external_id {external_id!r} already exists; "
        "retry with ?on_conflict=update to replace it",
        details={"external_id": external_id, "id": existing_id},
    )


async def create_item(
    session: Session,
    storage: BlobStorage,
    settings: GatewaySettings,
    limiter: anyio.CapacityLimiter,
    *,
    tenant_id: str,
    inc: Incoming,
    replace: bool,
) -> tuple[ContentItem, Job, bool]:
    """Store one upload and its item (new, or the one with its external id when ``replace``)
    with a tagging job: ``(item, job, created)``. The job is committed, not yet published."""
    existing = None
    if inc.fields.external_id:
        existing = crud.get_content_by_external_id(
            session, tenant_id=tenant_id, external_id=inc.fields.external_id
        )
        if existing is not None and not replace:
            raise external_id_conflict(inc.fields.external_id, existing.id)
    item = existing or ContentItem(
        tenant_id=tenant_id, external_id=inc.fields.external_id, assets=[], tags=[]
    )
    try:
        # Inside: a store failing after the original (on a rendition) discards what it took.
        if inc.upload is not None:
            await to_thread.run_sync(store_upload, inc, settings, storage, limiter=limiter)
        dropped = apply_incoming(session, item, inc)
        if existing is None:
            session.add(item)
            session.flush()
        job = new_job(session, tenant_id=tenant_id, job_type=TAG_CONTENT.name, content_id=item.id)
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        discard(session, storage, inc)
        raise external_id_conflict(inc.fields.external_id or "", None) from exc
    except BaseException:
        session.rollback()
        discard(session, storage, inc)
        raise
    ensure_stored(storage, inc.blob_sources())
    delete_unreferenced_blobs(session, storage, dropped)
    return item, job, existing is None


async def create_batch(
    session: Session,
    storage: BlobStorage,
    settings: GatewaySettings,
    limiter: anyio.CapacityLimiter,
    *,
    tenant_id: str,
    incoming: list[Incoming],
) -> tuple[list[ContentItem], Job]:
    """Store a batch of new items with one tagging job, all or nothing. The job is committed,
    not yet published."""
    ext_ids = [i.fields.external_id for i in incoming if i.fields.external_id]
    if len(ext_ids) != len(set(ext_ids)):
        raise Invalid("external_id values repeat within the batch")
    for idx, inc in enumerate(incoming):
        if inc.fields.external_id and crud.get_content_by_external_id(
            session, tenant_id=tenant_id, external_id=inc.fields.external_id
        ):
            raise Conflict(
                f"items[{idx}]: external_id {inc.fields.external_id!r} already exists",
                details={"index": idx},
            )
    try:
        await store_uploads(incoming, settings, storage, limiter)
        items = []
        for inc in incoming:
            item = ContentItem(
                tenant_id=tenant_id,
                external_id=inc.fields.external_id,
                assets=[],
                tags=[],
            )
            apply_incoming(session, item, inc)
            session.add(item)
            items.append(item)
        session.flush()
        job = new_job(
            session,
            tenant_id=tenant_id,
            job_type=TAG_BATCH.name,
            params={"content_ids": [i.id for i in items]},
        )
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        for inc in incoming:
            discard(session, storage, inc)
        raise Conflict("an external_id of this batch already exists") from exc
    except BaseException:
        session.rollback()
        for inc in incoming:
            discard(session, storage, inc)
        raise
    ensure_stored(storage, [source for inc in incoming for source in inc.blob_sources()])
    return items, job


def delete_item(session: Session, storage: BlobStorage, *, tenant_id: str, content_id: str) -> None:
    item = crud.get_content(session, tenant_id=tenant_id, content_id=content_id)
    keys = {a.storage_key for a in item.assets}
    session.delete(item)
    session.commit()
    delete_unreferenced_blobs(session, storage, keys)

"""Data access for the gateway: keyword-only functions that take the session."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session, selectinload

from services.gateway.errors import Invalid, NotFound, TooLarge
from shared.db.models import VISIBLE_ORIGINS, ContentItem, Job, Tag, TagOrigin
from shared.request_limits import loads_limited
from shared.schemas.content import AssetPublic, ContentPublic, TagLevel, TagPublic

# The tagger's working copy is internal and short-lived (shared/imaging.py).
PUBLIC_ASSET_ROLES = frozenset({"original", "thumbnail"})


def get_content(session: Session, *, tenant_id: str, content_id: str) -> ContentItem:
    item = session.scalars(
        select(ContentItem)
        .where(ContentItem.id == content_id, ContentItem.tenant_id == tenant_id)
        .options(selectinload(ContentItem.assets), selectinload(ContentItem.tags))
    ).first()
    if item is None:
        raise NotFound(f"content {content_id} not found")
    return item


def get_content_by_external_id(
    session: Session, *, tenant_id: str, external_id: str
) -> ContentItem | None:
    return session.scalars(
        select(ContentItem)
        .where(ContentItem.tenant_id == tenant_id, ContentItem.external_id == external_id)
        .options(selectinload(ContentItem.assets), selectinload(ContentItem.tags))
    ).first()


def get_job(session: Session, *, tenant_id: str, job_id: str, system: bool = False) -> Job:
    """The tenant's job; with ``system=True`` also a system job (no tenant: a bundled model's
    build, which holds no tenant data and which the generation endpoints' 503 points to)."""
    owner: ColumnElement[bool] = Job.tenant_id == tenant_id
    if system:
        owner = or_(owner, Job.tenant_id.is_(None))
    job = session.scalars(select(Job).where(Job.id == job_id, owner)).first()
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def list_jobs(
    session: Session,
    *,
    tenant_id: str,
    limit: int,
    status: str | None = None,
    job_type: str | None = None,
) -> list[Job]:
    """The tenant's newest jobs first (system jobs are read by id only)."""
    stmt = (
        select(Job)
        .where(Job.tenant_id == tenant_id)
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(limit)
    )
    if status:
        stmt = stmt.where(Job.status == status)
    if job_type:
        stmt = stmt.where(Job.type == job_type)
    return list(session.scalars(stmt).all())


def content_public(
    item: ContentItem,
    *,
    min_score: float = 0.0,
    tag_limit: int | None = None,
    level: TagLevel | None = None,
) -> ContentPublic:
    # One entry per tag name: a person's decision wins over a model, then the higher score.
    best: dict[str, Tag] = {}
    for t in item.tags:
        if t.origin not in VISIBLE_ORIGINS:
            continue
        cur = best.get(t.name)
        rank = (t.origin != TagOrigin.auto, t.score)
        if cur is None or rank > (cur.origin != TagOrigin.auto, cur.score):
            best[t.name] = t
    tags = sorted(
        (t for t in best.values() if t.score >= min_score and (level is None or t.level == level)),
        key=lambda t: (-t.score, t.name),
    )
    if tag_limit is not None:
        tags = tags[:tag_limit]
    return ContentPublic(
        id=item.id,
        external_id=item.external_id,
        kind=item.kind,
        title=item.title,
        text=item.text,
        metadata=item.meta or {},
        status=item.status,
        phash=item.phash,
        duplicate_of=item.duplicate_of,
        assets=[
            AssetPublic(
                role=a.role,
                mime_type=a.mime_type,
                byte_size=a.byte_size,
                width=a.width,
                height=a.height,
                sha256=a.sha256,
                url=f"/v1/content/{item.id}/assets/{a.role}",
            )
            for a in sorted(item.assets, key=lambda a: a.role)
            if a.role in PUBLIC_ASSET_ROLES
        ],
        tags=[
            TagPublic(name=t.name, score=t.score, source=t.source, origin=t.origin, level=t.level)
            for t in tags
        ],
        created_at=item.created_at,
        updated_at=item.updated_at,
    )


def encode_cursor(item: ContentItem) -> str:
    raw = json.dumps([item.created_at.isoformat(), item.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, cid = json.loads(raw)
        return datetime.fromisoformat(ts), str(cid)
    except (ValueError, TypeError) as exc:
        raise Invalid("invalid cursor; pass back next_cursor unchanged") from exc


def list_content(
    session: Session,
    *,
    tenant_id: str,
    limit: int,
    cursor: str | None,
    kind: str | None,
    tag: str | None,
) -> tuple[list[ContentItem], str | None]:
    stmt = (
        select(ContentItem)
        .where(ContentItem.tenant_id == tenant_id)
        .options(selectinload(ContentItem.assets), selectinload(ContentItem.tags))
        .order_by(ContentItem.created_at.desc(), ContentItem.id.desc())
        .limit(limit + 1)
    )
    if kind:
        stmt = stmt.where(ContentItem.kind == kind)
    if tag:
        stmt = stmt.where(
            ContentItem.id.in_(
                select(Tag.content_id).where(
                    Tag.tenant_id == tenant_id,
                    Tag.name == tag.strip().lower(),
                    Tag.origin.in_(VISIBLE_ORIGINS),
                )
            )
        )
    if cursor:
        ts, cid = decode_cursor(cursor)
        stmt = stmt.where(
            or_(
                ContentItem.created_at < ts,
                and_(ContentItem.created_at == ts, ContentItem.id < cid),
            )
        )
    rows = list(session.scalars(stmt).all())
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def parse_metadata(raw: str | None, *, max_bytes: int, max_depth: int) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if len(raw.encode()) > max_bytes:
        raise TooLarge(f"metadata exceeds {max_bytes} bytes")
    try:
        value = loads_limited(raw, max_depth)
    except ValueError as exc:
        raise Invalid(f"metadata is not valid JSON: {exc}", code="invalid_metadata") from exc
    if not isinstance(value, dict):
        raise Invalid("metadata must be a JSON object", code="invalid_metadata")
    return value

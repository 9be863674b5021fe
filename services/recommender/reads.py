"""SQL reads of one request: item rows and tags, CMS ids, the user's newest events.

The per-request queries go straight through psycopg on PostgreSQL (``driver``): through the ORM
each costs more Python than the query itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.models import VISIBLE_ORIGINS as VISIBLE_TAGS
from shared.db.models import ContentItem, Interaction, Tag

# A user's newest events folded in at request time; older ones are in the trained model anyway.
MAX_HISTORY = 500


@dataclass
class ItemRow:
    id: str
    external_id: str | None
    title: str | None
    kind: str
    meta: dict[str, Any]
    tags: set[str] = field(default_factory=set)
    has_tags: bool = False

    @property
    def label(self) -> str:
        return self.title or self.external_id or self.id


def resolve_ids(session: Session, tenant_id: str, keys: Iterable[str]) -> dict[str, str]:
    """CMS item ids (external_id, else our content id) -> content ids; unknown ones omitted."""
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return {}
    found: dict[str, str] = {}
    for ext, cid in session.execute(
        select(ContentItem.external_id, ContentItem.id).where(
            ContentItem.tenant_id == tenant_id, ContentItem.external_id.in_(wanted)
        )
    ):
        if ext is not None:  # the IN above matched it
            found[ext] = cid
    rest = [k for k in wanted if k not in found]
    if rest:
        for (cid,) in session.execute(
            select(ContentItem.id).where(
                ContentItem.tenant_id == tenant_id, ContentItem.id.in_(rest)
            )
        ):
            found[cid] = cid
    return found


def _driver(session: Session) -> psycopg.Connection[Any] | None:
    """The session's psycopg connection on PostgreSQL (None elsewhere), for the per-request
    queries: through the ORM each costs several times the query itself in Python (see
    docs/perf.md)."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    raw = session.connection().connection.driver_connection
    return raw if isinstance(raw, psycopg.Connection) else None


# By primary key only, the tenant checked in Python: with `tenant_id = %s` in the WHERE clause
# and table statistics that lag a bulk import, PostgreSQL ANDs in a scan of the tenant's whole
# index range, far slower than the primary-key lookups (see docs/perf.md).
_SQL_ROWS = (
    "SELECT id, tenant_id, external_id, title, kind, metadata FROM content_items WHERE id = ANY(%s)"
)
_SQL_HISTORY = (
    "SELECT item_id, event_type, value FROM interactions WHERE tenant_id = %s AND user_id = %s "
    "ORDER BY occurred_at DESC, id DESC LIMIT %s"
)

_SQL_TAGS = "SELECT content_id, name FROM tags WHERE content_id = ANY(%s) AND origin = ANY(%s)"
_VISIBLE_ORIGINS = [o.value for o in VISIBLE_TAGS]


def fetch_rows(
    session: Session, tenant_id: str, cids: Iterable[str], *, with_tags: bool
) -> dict[str, ItemRow]:
    ids = list(dict.fromkeys(cids))
    if not ids:
        return {}
    raw = _driver(session)
    if raw is not None:
        with raw.cursor() as cur:
            cur.execute(_SQL_ROWS, (ids,))
            rows = {
                cid: ItemRow(cid, ext, title, kind, meta or {})
                for cid, tenant, ext, title, kind, meta in cur.fetchall()
                if tenant == tenant_id
            }
            if with_tags and rows:
                cur.execute(_SQL_TAGS, (list(rows), _VISIBLE_ORIGINS))
                for cid, name in cur.fetchall():
                    rows[cid].tags.add(name)
    else:
        rows = {
            r.id: ItemRow(r.id, r.external_id, r.title, r.kind, r.meta or {})
            for r in session.execute(
                select(
                    ContentItem.id,
                    ContentItem.external_id,
                    ContentItem.title,
                    ContentItem.kind,
                    ContentItem.meta,
                ).where(ContentItem.tenant_id == tenant_id, ContentItem.id.in_(ids))
            )
        }
        if with_tags and rows:
            for cid, name in session.execute(
                select(Tag.content_id, Tag.name).where(
                    Tag.content_id.in_(list(rows)), Tag.origin.in_(VISIBLE_TAGS)
                )
            ):
                rows[cid].tags.add(name)
    if with_tags:
        for row in rows.values():
            row.has_tags = True
    return rows


def read_history(
    session: Session, tenant_id: str, user_id: str, weights: dict[str, float]
) -> tuple[dict[str, float], list[str]]:
    """Per-item total weight of the user's newest events, and items newest first."""
    totals: dict[str, float] = {}
    order: list[str] = []
    raw = _driver(session)
    rows: Iterable[Any]
    if raw is not None:
        with raw.cursor() as cur:
            cur.execute(_SQL_HISTORY, (tenant_id, user_id, MAX_HISTORY))
            rows = cur.fetchall()
    else:
        rows = session.execute(
            select(Interaction.item_id, Interaction.event_type, Interaction.value)
            .where(Interaction.tenant_id == tenant_id, Interaction.user_id == user_id)
            .order_by(Interaction.occurred_at.desc(), Interaction.id.desc())
            .limit(MAX_HISTORY)
        )
    for item, etype, value in rows:
        w = weights.get(etype, 0.0) * (1.0 if value is None else value)
        if item not in totals:
            order.append(item)
            totals[item] = 0.0
        totals[item] += w
    return totals, order

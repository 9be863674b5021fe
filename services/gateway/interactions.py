"""Bulk ingestion of interaction events: validate a whole batch, then store it in one go.

A batch is all or nothing: every event is validated before anything is written, and the
writes share one transaction. Retries are safe: events carrying an ``event_id`` are inserted
with ``ON CONFLICT DO NOTHING`` against the (tenant, event_id) unique key, so a retried batch
never counts twice. Unknown item ids become bare ``ContentItem(kind="item")`` rows, inserted in
bulk with the same conflict rule so two concurrent batches cannot create the same item twice.

On PostgreSQL, event ids already stored are filtered out with one indexed lookup and the rest
travel by ``COPY`` straight into the table; a race with a concurrent retry falls back to
``COPY`` into a temporary table and ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``
(see ``bench/bench_ingest.py`` for the rates of each path).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.gateway.interaction_events import Event, validate_events
from shared.db.models import ContentItem, ContentKind, ContentStatus, Interaction

__all__ = ["Event", "IngestResult", "ingest", "resolve_items", "store_events", "validate_events"]

# Bound parameters per statement stay well under SQLite's 32,766 and PostgreSQL's 65,535.
CHUNK = 2000


@dataclass(frozen=True)
class IngestResult:
    received: int
    stored: int
    duplicates: int
    items_created: int


def _chunks(values: Sequence[str], size: int = CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _dialect_insert(session: Session, table: Any) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _raw(session: Session) -> psycopg.Connection[Any]:
    raw = session.connection().connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    return raw


def resolve_items(
    session: Session, *, tenant_id: str, keys: Iterable[str], create: bool = True
) -> tuple[dict[str, str], int]:
    """Map the CMS's item ids (our external_id, else our content id) to content ids.

    Unknown ids become bare items when ``create``; returns the mapping and how many were made.
    """
    wanted = list(dict.fromkeys(keys))
    if session.get_bind().dialect.name == "postgresql":
        return _pg_resolve_items(_raw(session), tenant_id, wanted, create=create)
    found: dict[str, str] = {}
    for chunk in _chunks(wanted):
        rows = session.execute(
            select(ContentItem.external_id, ContentItem.id).where(
                ContentItem.tenant_id == tenant_id, ContentItem.external_id.in_(chunk)
            )
        )
        found.update({ext: cid for ext, cid in rows if ext is not None})
    missing = [k for k in wanted if k not in found]
    for chunk in _chunks(missing):
        ids = session.scalars(
            select(ContentItem.id).where(
                ContentItem.tenant_id == tenant_id, ContentItem.id.in_(chunk)
            )
        )
        found.update({cid: cid for cid in ids})
    missing = [k for k in wanted if k not in found]
    if not missing or not create:
        return found, 0
    now = datetime.now(UTC)
    rows_to_add = [
        {
            "id": str(uuid.uuid4()),
            "tenant_id": tenant_id,
            "external_id": key,
            "kind": ContentKind.item.value,
            "status": ContentStatus.ready.value,
            "meta": {},
            "created_at": now,
            "updated_at": now,
        }
        for key in missing
    ]
    for start in range(0, len(rows_to_add), CHUNK // 8):
        stmt = _dialect_insert(session, ContentItem).on_conflict_do_nothing(
            index_elements=["tenant_id", "external_id"]
        )
        session.execute(stmt, rows_to_add[start : start + CHUNK // 8])
    # Re-read rather than trust our ids: a concurrent batch may have created some of them.
    created = 0
    ours = {r["external_id"]: r["id"] for r in rows_to_add}
    for chunk in _chunks(missing):
        rows = session.execute(
            select(ContentItem.external_id, ContentItem.id).where(
                ContentItem.tenant_id == tenant_id, ContentItem.external_id.in_(chunk)
            )
        )
        for ext, cid in rows:
            if ext is not None:  # the IN above matched it
                found[ext] = cid
                created += int(ours.get(ext) == cid)
    return found, created


# Lookups by many keys: one array parameter, unnest()ed, each key probing the unique index in a
# LATERAL subquery (its LIMIT 1 keeps PostgreSQL from flattening it into a join). The plan is
# then per-key index probes whatever the table statistics say; they lag a bulk import (autovacuum
# analyzes later), and the planner, believing the tenant has a few dozen rows, otherwise reads
# the tenant's whole index range once per batch (O(rows) per batch, growing with the table; see
# docs/perf.md). Never `IN ($1, ..., $2000)` either:
# psycopg prepares a statement after five runs, PostgreSQL then switches to a generic plan, and
# there a list of parameters is no constant array, so it was searched linearly for every row of
# the tenant (O(rows x keys), slower with every batch).
_SQL_BY_EXTERNAL_ID = (
    "SELECT k.key, c.id FROM unnest(%s::text[]) AS k(key) CROSS JOIN LATERAL "
    "(SELECT id FROM content_items WHERE tenant_id = %s AND external_id = k.key LIMIT 1) AS c"
)
_SQL_BY_ID = (
    "SELECT c.id FROM unnest(%s::text[]) AS k(key) CROSS JOIN LATERAL "
    "(SELECT id FROM content_items WHERE id = k.key AND tenant_id = %s LIMIT 1) AS c"
)
_SQL_CREATE_ITEMS = (
    "INSERT INTO content_items "
    "(id, tenant_id, external_id, kind, status, metadata, created_at, updated_at) "
    "SELECT gen_random_uuid()::text, %s, k.key, %s, %s, '{}'::jsonb, now(), now() "
    "FROM unnest(%s::text[]) AS k(key) "
    "ON CONFLICT (tenant_id, external_id) DO NOTHING RETURNING external_id, id"
)


def _pg_resolve_items(
    raw: psycopg.Connection[Any], tenant_id: str, wanted: list[str], *, create: bool
) -> tuple[dict[str, str], int]:
    with raw.cursor() as cur:
        cur.execute(_SQL_BY_EXTERNAL_ID, (wanted, tenant_id))
        found: dict[str, str] = dict(cur.fetchall())
        missing = [k for k in wanted if k not in found]
        if missing:
            cur.execute(_SQL_BY_ID, (missing, tenant_id))
            found.update((cid, cid) for (cid,) in cur.fetchall())
            missing = [k for k in wanted if k not in found]
        if not missing or not create:
            return found, 0
        cur.execute(
            _SQL_CREATE_ITEMS,
            (tenant_id, ContentKind.item.value, ContentStatus.ready.value, missing),
        )
        made = dict(cur.fetchall())
        found.update(made)
        # Keys not returned were created by a concurrent batch (ON CONFLICT waited for it to
        # commit, so the row is visible to this next statement).
        raced = [k for k in missing if k not in made]
        if raced:
            cur.execute(_SQL_BY_EXTERNAL_ID, (raced, tenant_id))
            found.update(cur.fetchall())
    return found, len(made)


_COLS = "tenant_id, user_id, item_id, event_type, value, occurred_at, event_id"
_SQL_KNOWN_EVENTS = (
    "SELECT k.eid FROM unnest(%s::text[]) AS k(eid) CROSS JOIN LATERAL "
    "(SELECT 1 FROM interactions WHERE tenant_id = %s AND event_id = k.eid LIMIT 1) AS i"
)


def _copy_insert(raw: psycopg.Connection[Any], tenant_id: str, rows: list[tuple[Any, ...]]) -> int:
    """PostgreSQL: drop known event ids, then COPY straight into ``interactions``.

    COPY has no ON CONFLICT, so duplicates are filtered first with one indexed lookup. If a
    concurrent request stores one of the same event ids in between, the COPY fails on the unique
    key; we roll back to a savepoint and take the slower conflict-aware path for this batch.
    """
    ids = [r[6] for r in rows if r[6] is not None]
    known: set[str] = set()
    if ids:
        with raw.cursor() as cur:
            cur.execute(_SQL_KNOWN_EVENTS, (ids, tenant_id))
            known = {r[0] for r in cur.fetchall()}
    fresh: list[tuple[Any, ...]] = []
    for row in rows:
        eid = row[6]
        if eid is not None:
            if eid in known:
                continue
            known.add(eid)  # a second copy inside the batch is a duplicate too
        fresh.append(row)
    if not fresh:
        return 0
    try:
        # A savepoint: inside the session's transaction, so a failed COPY leaves it usable.
        with (
            raw.transaction(),
            raw.cursor() as cur,
            cur.copy(f"COPY interactions ({_COLS}) FROM STDIN") as copy,
        ):
            for row in fresh:
                copy.write_row(row)
        return len(fresh)
    except psycopg.errors.UniqueViolation:
        return _copy_via_temp(raw, fresh)


def _copy_via_temp(raw: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> int:
    with raw.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS _ingest_interactions "
            "(tenant_id varchar(36), user_id varchar(255), item_id varchar(36), "
            "event_type varchar(64), value double precision, occurred_at timestamptz, "
            "event_id varchar(255)) ON COMMIT DELETE ROWS"
        )
        with cur.copy(f"COPY _ingest_interactions ({_COLS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(
            f"INSERT INTO interactions ({_COLS}) SELECT {_COLS} FROM _ingest_interactions "
            "ON CONFLICT DO NOTHING"
        )
        stored = cur.rowcount
        # ON COMMIT DELETE ROWS would also empty it, but a caller may ingest twice per commit.
        cur.execute("TRUNCATE _ingest_interactions")
    return stored


def _values_insert(session: Session, rows: list[dict[str, Any]]) -> int:
    stored = 0
    for start in range(0, len(rows), CHUNK // 8):
        stmt = (
            _dialect_insert(session, Interaction).on_conflict_do_nothing().returning(Interaction.id)
        )
        stored += len(session.execute(stmt, rows[start : start + CHUNK // 8]).all())
    return stored


def store_events(
    session: Session, *, tenant_id: str, events: Sequence[Event], commit: bool = True
) -> IngestResult:
    """Store validated events in one transaction (rolled back as a whole on any error)."""
    try:
        items, created = resolve_items(
            session, tenant_id=tenant_id, keys=(ev.item_id for ev in events)
        )
        if session.get_bind().dialect.name == "postgresql":
            tuples = [(tenant_id, ev.user_id, items[ev.item_id], *ev[2:]) for ev in events]
            stored = _copy_insert(_raw(session), tenant_id, tuples)
        else:
            dicts = [
                {
                    "tenant_id": tenant_id,
                    "user_id": ev.user_id,
                    "item_id": items[ev.item_id],
                    "event_type": ev.event_type,
                    "value": ev.value,
                    "occurred_at": ev.timestamp,
                    "event_id": ev.event_id,
                }
                for ev in events
            ]
            stored = _values_insert(session, dicts)
        if commit:
            session.commit()
    except BaseException:
        session.rollback()
        raise
    return IngestResult(
        received=len(events),
        stored=stored,
        duplicates=len(events) - stored,
        items_created=created,
    )


def ingest(
    session: Session,
    *,
    tenant_id: str,
    raw_events: Any,
    event_weights: Mapping[str, float],
    max_events: int,
) -> IngestResult:
    events = validate_events(raw_events, event_types=set(event_weights), max_events=max_events)
    return store_events(session, tenant_id=tenant_id, events=events)

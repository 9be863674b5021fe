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
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.db.models import ContentItem, ContentKind, ContentStatus, Interaction
from shared.http import ApiError
from shared.schemas.recommendations import InteractionIn

# Bound parameters per statement stay well under SQLite's 32,766 and PostgreSQL's 65,535.
CHUNK = 2000

_events_adapter = TypeAdapter(list[InteractionIn])


@dataclass(frozen=True)
class IngestResult:
    received: int
    stored: int
    duplicates: int
    items_created: int


def validate_events(
    raw: Any, *, event_types: Iterable[str], max_events: int, now: datetime | None = None
) -> list[InteractionIn]:
    """Parse a batch or raise a 422 that names the first offending event index."""
    if not isinstance(raw, list):
        raise ApiError(422, "`events` must be a list")
    if not raw:
        raise ApiError(422, "`events` is empty")
    if len(raw) > max_events:
        raise ApiError(
            422,
            f"{len(raw)} events in one batch; the limit is {max_events}",
            details={"index": max_events, "limit": max_events},
        )
    try:
        events = _events_adapter.validate_python(raw)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        loc = list(first["loc"])
        index = loc[0] if loc and isinstance(loc[0], int) else None
        field = ".".join(str(p) for p in loc[1:]) or "event"
        raise ApiError(
            422,
            f"events[{index}].{field}: {first['msg']}",
            details=[
                {"index": e["loc"][0] if e["loc"] else None, "loc": list(e["loc"]), "msg": e["msg"]}
                for e in errors[:20]
            ],
        ) from exc
    known = set(event_types)
    now = now or datetime.now(UTC)
    for i, ev in enumerate(events):
        if ev.event_type not in known:
            raise ApiError(
                422,
                f"events[{i}].event_type: unknown event type {ev.event_type!r}; "
                f"configure its weight with PUT /v1/recommender/config",
                details=[{"index": i, "loc": [i, "event_type"], "msg": "unknown event type"}],
            )
        if ev.timestamp is None:
            ev.timestamp = now
        elif ev.timestamp.tzinfo is None:
            # ISO 8601 without an offset: the only defensible reading for a server is UTC.
            ev.timestamp = ev.timestamp.replace(tzinfo=UTC)
    return events


def _chunks(values: Sequence[str], size: int = CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _dialect_insert(session: Session, table: Any) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def resolve_items(
    session: Session, *, tenant_id: str, keys: Iterable[str], create: bool = True
) -> tuple[dict[str, str], int]:
    """Map the CMS's item ids (our external_id, else our content id) to content ids.

    Unknown ids become bare items when ``create``; returns the mapping and how many were made.
    """
    wanted = list(dict.fromkeys(keys))
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
        rows = session.execute(
            select(ContentItem.id).where(
                ContentItem.tenant_id == tenant_id, ContentItem.id.in_(chunk)
            )
        )
        found.update({cid: cid for (cid,) in rows})
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
            found[ext] = cid
            created += int(ours.get(ext) == cid)
    return found, created


_COLS = "tenant_id, user_id, item_id, event_type, value, occurred_at, event_id"


def _copy_insert(conn: Connection, tenant_id: str, rows: list[tuple[Any, ...]]) -> int:
    """PostgreSQL: drop known event ids, then COPY straight into ``interactions``.

    COPY has no ON CONFLICT, so duplicates are filtered first with one indexed lookup. If a
    concurrent request stores one of the same event ids in between, the COPY fails on the unique
    key; we roll back to a savepoint and take the slower conflict-aware path for this batch.
    """
    raw = conn.connection.driver_connection
    assert raw is not None
    ids = [r[6] for r in rows if r[6] is not None]
    known: set[str] = set()
    with raw.cursor() as cur:
        if ids:
            cur.execute(
                "SELECT event_id FROM interactions WHERE tenant_id = %s AND event_id = ANY(%s)",
                (tenant_id, ids),
            )
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
    session: Session, *, tenant_id: str, events: Sequence[InteractionIn], commit: bool = True
) -> IngestResult:
    """Store validated events in one transaction (rolled back as a whole on any error)."""
    try:
        items, created = resolve_items(
            session, tenant_id=tenant_id, keys=(ev.item_id for ev in events)
        )
        if session.get_bind().dialect.name == "postgresql":
            tuples = [
                (
                    tenant_id,
                    ev.user_id,
                    items[ev.item_id],
                    ev.event_type,
                    ev.value,
                    ev.timestamp,
                    ev.event_id,
                )
                for ev in events
            ]
            stored = _copy_insert(session.connection(), tenant_id, tuples)
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
    events = validate_events(raw_events, event_types=event_weights.keys(), max_events=max_events)
    return store_events(session, tenant_id=tenant_id, events=events)

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
from typing import Any, NamedTuple

import psycopg
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.db.models import ContentItem, ContentKind, ContentStatus, Interaction
from shared.http import ApiError
from shared.schemas.recommendations import (
    InteractionIn,
    interaction_time_error,
    interaction_value_error,
)

# Bound parameters per statement stay well under SQLite's 32,766 and PostgreSQL's 65,535.
CHUNK = 2000


@dataclass(frozen=True)
class IngestResult:
    received: int
    stored: int
    duplicates: int
    items_created: int


class Event(NamedTuple):
    """One validated event, in the column order of the COPY into ``interactions``."""

    user_id: str
    item_id: str
    event_type: str
    value: float | None
    timestamp: datetime
    event_id: str | None


_FIELDS = frozenset(InteractionIn.model_fields)
_INF = float("inf")
_event_adapter = TypeAdapter(InteractionIn)


def _text(v: Any, limit: int) -> bool:
    return type(v) is str and 0 < len(v) <= limit


def _fast_event(ev: Any, known: frozenset[str] | set[str], now: datetime) -> Event | None:
    """The common shape of an event, checked without pydantic; None means "ask pydantic".

    Accepts exactly what ``InteractionIn`` accepts for these shapes (plain strings, a finite
    int/float or null value, an ISO 8601 string or a datetime), so anything unusual (a numeric
    string value, a Unix timestamp, a wrong type) takes the pydantic path and gets its coercion
    or its error message. ``datetime.fromisoformat`` also reads the ISO 8601 basic and week
    forms that pydantic refuses; both are valid ISO 8601. The range of value and timestamp is
    checked by the caller, ``_range_errors``, with the rule ``InteractionIn`` applies.
    """
    if type(ev) is not dict or not _FIELDS.issuperset(ev):
        return None
    user_id = ev.get("user_id")
    item_id = ev.get("item_id")
    event_type = ev.get("event_type")
    if not (_text(user_id, 255) and _text(item_id, 255) and _text(event_type, 64)):
        return None
    value = ev.get("value")
    if value is not None:
        if type(value) is int and -(2**53) <= value <= 2**53:
            value = float(value)
        elif type(value) is not float or value != value or value in (_INF, -_INF):
            return None
    event_id = ev.get("event_id")
    if event_id is not None and not _text(event_id, 255):
        return None
    ts = ev.get("timestamp")
    if ts is None:
        ts = now
    elif type(ts) is str:
        try:
            ts = datetime.fromisoformat(ts)
        except ValueError:
            return None
    elif not isinstance(ts, datetime):
        return None
    if ts.tzinfo is None:
        # ISO 8601 without an offset: the only defensible reading for a server is UTC.
        ts = ts.replace(tzinfo=UTC)
    if event_type not in known:
        return None
    return Event(user_id, item_id, event_type, value, ts, event_id)  # type: ignore[arg-type]


def _slow_event(
    ev: Any, i: int, known: frozenset[str] | set[str], now: datetime
) -> tuple[Event | None, list[dict[str, Any]], str]:
    """Pydantic's reading of one event the fast path declined: the event, or its errors and
    the message that names the first of them."""
    try:
        m = _event_adapter.validate_python(ev, context={"now": now})
    except ValidationError as exc:
        errors = [{"index": i, "loc": [i, *e["loc"]], "msg": e["msg"]} for e in exc.errors()]
        field = ".".join(str(p) for p in errors[0]["loc"][1:]) or "event"
        return None, errors, f"events[{i}].{field}: {errors[0]['msg']}"
    if m.event_type not in known:
        return (
            None,
            [{"index": i, "loc": [i, "event_type"], "msg": "unknown event type"}],
            f"events[{i}].event_type: unknown event type {m.event_type!r}; "
            "configure its weight with PUT /v1/recommender/config",
        )
    ts = m.timestamp or now
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return Event(m.user_id, m.item_id, m.event_type, m.value, ts, m.event_id), [], ""


def _range_errors(ev: Event, i: int, now: datetime) -> list[dict[str, Any]]:
    """The errors of an event whose value or timestamp is outside the sane range (the rule of
    ``InteractionIn``, shared/schemas/recommendations.py), shaped as ``_slow_event``'s are."""
    errors: list[dict[str, Any]] = []
    if ev.value is not None and (msg := interaction_value_error(ev.value)):
        errors.append({"index": i, "loc": [i, "value"], "msg": msg})
    if msg := interaction_time_error(ev.timestamp, now):
        errors.append({"index": i, "loc": [i, "timestamp"], "msg": msg})
    return errors


def validate_events(
    raw: Any, *, event_types: Iterable[str], max_events: int, now: datetime | None = None
) -> list[Event]:
    """Parse a batch or raise a 422 that names the first offending event index.

    Per-event pydantic models cost ~70 ms per 10,000 events, a third of the whole ingest; the
    hand-written check above handles the usual shapes and pydantic sees only the rest.
    """
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
    known = event_types if isinstance(event_types, set | frozenset) else set(event_types)
    now = now or datetime.now(UTC)
    events: list[Event] = []
    errors: list[dict[str, Any]] = []
    message = ""
    for i, ev in enumerate(raw):
        parsed = _fast_event(ev, known, now)
        if parsed is not None:
            # Out of range is refused, never clamped or dropped: the caller learns what to fix.
            errs = _range_errors(parsed, i, now)
            msg = f"events[{i}].{errs[0]['loc'][1]}: {errs[0]['msg']}" if errs else ""
        else:
            parsed, errs, msg = _slow_event(ev, i, known, now)
        if errs:
            message = message or msg
            errors += errs
            if len(errors) >= 20:
                break
            continue
        assert parsed is not None
        events.append(parsed)
    if errors:
        raise ApiError(422, message, details=errors[:20])
    return events


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


# Lookups by many keys: one array parameter, unnest()ed, each key probing the unique index in a
# LATERAL subquery (its LIMIT 1 keeps PostgreSQL from flattening it into a join). The plan is
# then per-key index probes whatever the table statistics say; they lag a bulk import (autovacuum
# analyzes later), and the planner, believing the tenant has a few dozen rows, otherwise reads
# the tenant's whole index range once per batch (O(rows) per batch: 46 ms instead of 10 ms for
# 10k event ids at 300k events, growing with the table). Never `IN ($1, ..., $2000)` either:
# psycopg prepares a statement after five runs, PostgreSQL then switches to a generic plan, and
# there a list of parameters is no constant array, so it was searched linearly for every row of
# the tenant (O(rows x keys): 0.1 s for the first 10k new items, 18 s by the fourth batch).
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

"""Validation of interaction events: a whole batch checked before anything is stored.

The usual shapes are checked by hand (fast); only the rest go through pydantic, so the errors
are pydantic's and name the first offending event index.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from pydantic import TypeAdapter, ValidationError

from services.gateway.errors import Invalid
from shared.schemas.recommendations import (
    InteractionIn,
    interaction_time_error,
    interaction_value_error,
)
from shared.schemas.text import text_error


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
    # Unstorable text (NUL, lone surrogates) takes the pydantic path, which names the field.
    return type(v) is str and 0 < len(v) <= limit and text_error(v) is None


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
        errors: list[dict[str, Any]] = [
            {"index": i, "loc": [i, *e["loc"]], "msg": e["msg"]} for e in exc.errors()
        ]
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

    Per-event pydantic models cost a third of the whole ingest (see docs/perf.md); the
    hand-written check above handles the usual shapes and pydantic sees only the rest.
    """
    if not isinstance(raw, list):
        raise Invalid("`events` must be a list")
    if not raw:
        raise Invalid("`events` is empty")
    if len(raw) > max_events:
        raise Invalid(
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
        raise Invalid(message, details=errors[:20])
    return events

"""The hand-written event parser agrees with the pydantic schema it replaces on the hot path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from services.gateway.interactions import Event, validate_events
from services.recommender.candidates import top_indices as _top
from shared.http import ApiError
from shared.schemas.recommendations import DEFAULT_EVENT_WEIGHTS, InteractionIn

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
TYPES = set(DEFAULT_EVENT_WEIGHTS)


def parse(events: list[Any], types: set[str] = TYPES) -> list[Event]:
    return validate_events(events, event_types=types, max_events=100, now=NOW)


def reject(events: list[Any]) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(events)
    assert info.value.status == 422
    return info.value


def ev(**kw: Any) -> dict[str, Any]:
    return {"user_id": "u", "item_id": "i", "event_type": "view", **kw}


def test_usual_shapes_are_parsed() -> None:
    out = parse(
        [
            ev(timestamp="2024-05-01T10:00:00Z", event_id="e1"),
            ev(timestamp="2024-05-01T10:00:00", value=3),
            ev(timestamp="2024-05-01T12:00:00+02:00", value=2.5),
            ev(),
            ev(timestamp=datetime(2024, 5, 1, 10)),
        ]
    )
    assert out[0] == Event("u", "i", "view", None, datetime(2024, 5, 1, 10, tzinfo=UTC), "e1")
    # No offset: read as UTC.
    assert out[1].timestamp == datetime(2024, 5, 1, 10, tzinfo=UTC) and out[1].value == 3.0
    assert isinstance(out[1].value, float)
    assert out[2].timestamp.utcoffset() == timedelta(hours=2)
    assert out[2].timestamp == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert out[3].timestamp == NOW
    assert out[4].timestamp == datetime(2024, 5, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    "event",
    [
        ev(value="2.5"),  # pydantic's lax mode reads numeric strings
        ev(timestamp=1714557600),  # and Unix timestamps
        ev(timestamp="2024-05-01T10:00:00.123456789+01:00"),
        ev(value=True),
    ],
)
def test_unusual_shapes_get_the_pydantic_reading(event: dict[str, Any]) -> None:
    model = TypeAdapter(InteractionIn).validate_python(event)
    (out,) = parse([event])
    assert out.value == model.value
    ts = model.timestamp or NOW
    assert out.timestamp == (ts if ts.tzinfo else ts.replace(tzinfo=UTC))


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (ev(timestamp="yesterday"), "timestamp"),
        (ev(timestamp="2024-13-01T00:00:00"), "timestamp"),
        (ev(user_id=""), "user_id"),
        (ev(user_id=17), "user_id"),
        (ev(item_id="x" * 256), "item_id"),
        (ev(event_id=""), "event_id"),
        (ev(value=float("nan")), "value"),
        (ev(value=float("inf")), "value"),
        (ev(value="lots"), "value"),
        (ev(value=10**400), "value"),
        (ev(value=1e308), "value"),  # finite but out of the sane range: refused, not stored
        (ev(value=-1e308), "value"),
        (ev(value=1_000_001), "value"),
        (ev(value="1e7"), "value"),
        (ev(timestamp="9999-12-31T00:00:00Z"), "timestamp"),
        (ev(timestamp="99991231T000000Z"), "timestamp"),  # ISO basic, fast path only
        (ev(timestamp="0001-01-01"), "timestamp"),
        (ev(timestamp="1969-12-31T23:59:59"), "timestamp"),
        (ev(timestamp=-1), "timestamp"),
        (ev(colour="red"), "colour"),
        ({"user_id": "u", "item_id": "i"}, "event_type"),
        ("not an object", "event"),
    ],
)
def test_bad_events_name_their_index_and_field(event: Any, field: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(InteractionIn).validate_python(event)
    err = reject([ev(), ev(), event, ev()])
    assert err.message.startswith(f"events[2].{field}:"), err.message
    assert err.details[0]["index"] == 2


def test_the_first_offending_index_is_reported() -> None:
    err = reject([ev(), ev(event_type="wink"), ev(timestamp="soon")])
    assert err.message.startswith("events[1].event_type: unknown event type 'wink'")
    assert [d["index"] for d in err.details] == [1, 2]


def test_tenant_defined_types_and_batch_limits() -> None:
    assert parse([ev(event_type="wink")], TYPES | {"wink"})
    with pytest.raises(ApiError):
        parse([ev(event_type="wink")])
    with pytest.raises(ApiError, match="limit is 100"):
        parse([ev()] * 101)
    with pytest.raises(ApiError, match="empty"):
        parse([])
    with pytest.raises(ApiError, match="must be a list"):
        parse({"events": []})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("event", "ok"),
    [
        (ev(value=1e6), True),
        (ev(value=-1e6), True),
        (ev(value=1e6 + 0.5), False),
        (ev(value="-1000000"), True),
        (ev(timestamp="1970-01-01T00:00:00Z"), True),
        (ev(timestamp="1970-01-01T00:00:00"), True),
        (ev(timestamp="1970-01-01T00:59:59+01:00"), False),
        (ev(timestamp=0), True),
        (ev(timestamp=(NOW + timedelta(days=1)).isoformat()), True),
        (ev(timestamp=(NOW + timedelta(days=1, seconds=1)).isoformat()), False),
        (ev(timestamp="2024-06-02T21:00:00+10:00"), True),  # 11:00Z: inside, by the offset
    ],
)
def test_range_limits_agree_with_the_schema(event: dict[str, Any], ok: bool) -> None:
    adapter = TypeAdapter(InteractionIn)
    if ok:
        adapter.validate_python(event, context={"now": NOW})
        assert len(parse([event])) == 1
    else:
        with pytest.raises(ValidationError):
            adapter.validate_python(event, context={"now": NOW})
        err = reject([ev(), event])
        field = "value" if "value" in event else "timestamp"
        assert err.message.startswith(f"events[1].{field}: must "), err.message
        assert err.details == [{"index": 1, "loc": [1, field], "msg": err.details[0]["msg"]}]


def test_offsets_other_than_utc_are_kept() -> None:
    (out,) = parse([ev(timestamp="2024-05-01T10:00:00-05:00")])
    assert out.timestamp.tzinfo is not None
    assert out.timestamp.utcoffset() == timezone(timedelta(hours=-5)).utcoffset(None)


def _reference_top(scores: np.ndarray, k: int) -> np.ndarray:
    part = np.argpartition(-scores, k - 1)[:k]
    part = part[np.isfinite(scores[part])]
    return part[np.argsort(-scores[part], kind="stable")]


@pytest.mark.parametrize("seed", range(20))
def test_sampled_top_k_is_exact(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 20_000))
    k = int(rng.integers(1, 60))
    scores = rng.normal(size=n).astype(np.float32)
    if seed % 2:
        scores = np.round(scores, 1)  # many ties
    if seed % 3 == 0:
        scores[rng.random(n) < rng.random()] = -np.inf  # excluded items
    got = _top(scores, k)
    want = _reference_top(scores, min(k, n))
    assert len(got) == len(want)
    assert np.array_equal(scores[got], np.sort(scores[want])[::-1])
    assert len(set(got.tolist())) == len(got)

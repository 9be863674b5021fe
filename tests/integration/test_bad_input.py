"""Every kind of bad input gets a clear 4xx in the one error shape, and leaves nothing behind."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data
from sqlalchemy import func, select

from services.gateway.main import create_app
from shared.db.models import Asset, ContentItem, Interaction, Job
from shared.db.session import session_scope
from shared.schemas.recommendations import (
    MAX_INTERACTION_CLOCK_SKEW,
    MAX_INTERACTION_VALUE,
    MIN_INTERACTION_TIME,
)
from tests.conftest import Stack
from tests.helpers import auth, jpeg_bytes, png_bytes

pytestmark = pytest.mark.integration

SMALL_LIMIT = 200_000


@pytest.fixture
def client(stack: Stack) -> Iterator[TestClient]:
    settings = stack.gateway_settings(
        max_upload_bytes=SMALL_LIMIT, max_image_pixels=4_000_000, max_text_chars=10_000
    )
    with TestClient(create_app(settings)) as c:
        yield c


def _counts(stack: Stack, tenant_id: str) -> tuple[int, int, int]:
    with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
        items = s.scalar(
            select(func.count()).select_from(ContentItem).where(ContentItem.tenant_id == tenant_id)
        )
        assets = s.scalar(
            select(func.count())
            .select_from(Asset)
            .join(ContentItem)
            .where(ContentItem.tenant_id == tenant_id)
        )
        jobs = s.scalar(select(func.count()).select_from(Job).where(Job.tenant_id == tenant_id))
    return int(items or 0), int(assets or 0), int(jobs or 0)


def _blob_files(stack: Stack) -> set[str]:
    return {p.name for p in stack.storage_dir.rglob("*") if p.is_file() and len(p.name) == 64}


def _assert_error(r, status: int, code: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


def _bomb_png() -> bytes:
    # 20000 x 20000 1-bit pixels compress to a few kB but decode to 400 MP.
    im = Image.new("1", (20000, 20000))
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=True)
    return buf.getvalue()


BAD_UPLOADS = {
    "not-an-image": (("notes.txt", b"just some text, not pixels", "text/plain"), 415),
    "truncated-jpeg": (("cut.jpg", jpeg_bytes(data.chelsea())[:4000], "image/jpeg"), 422),
    "garbage-with-jpeg-magic": (("x.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 500, "image/jpeg"), 422),
    "tiff-not-allowed": (("a.tiff", None, "image/tiff"), 415),
    "too-many-pixels": (("big.png", None, "image/png"), 422),
    "decompression-bomb": (("bomb.png", None, "image/png"), 422),
    "oversize": (("huge.png", None, "image/png"), 413),
}


def _payload(name: str) -> tuple[str, bytes, str]:
    (fname, content, mime), _ = BAD_UPLOADS[name]
    if name == "tiff-not-allowed":
        buf = io.BytesIO()
        Image.fromarray(data.chelsea()).resize((120, 80)).save(buf, "TIFF")
        content = buf.getvalue()
    elif name == "too-many-pixels":
        content = png_bytes(Image.new("L", (2500, 2000)))  # 5 MP > 4 MP limit, tiny file
    elif name == "decompression-bomb":
        content = _bomb_png()
    elif name == "oversize":
        noise = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)
        content = png_bytes(Image.fromarray(noise))  # ~480 kB > 200 kB limit
    assert content is not None
    return fname, content, mime


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_bad_uploads_are_refused_and_leave_nothing(
    client: TestClient, stack: Stack, case: str
) -> None:
    tenant_id, key = stack.new_key()
    blobs_before = _blob_files(stack)
    r = client.post(
        "/v1/content",
        headers=auth(key),
        files={"file": _payload(case)},
        data={"external_id": f"bad-{case}", "title": "x"},
    )
    _assert_error(r, BAD_UPLOADS[case][1])
    assert _counts(stack, tenant_id) == (0, 0, 0)
    assert _blob_files(stack) == blobs_before
    # The external_id was not consumed by the failed attempt.
    ok = client.post(
        "/v1/content", headers=auth(key), json={"external_id": f"bad-{case}", "title": "x"}
    )
    assert ok.status_code == 202


def test_auth_errors(client: TestClient, stack: Stack) -> None:
    _assert_error(client.get("/v1/content"), 401, "unauthorized")
    _assert_error(client.get("/v1/content", headers=auth("atl_nope")), 401, "unauthorized")
    r = client.get("/v1/content", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    _assert_error(r, 401)
    _, read_only = stack.new_key(scopes=("read",))
    r = client.post("/v1/content", headers=auth(read_only), json={"title": "x"})
    _assert_error(r, 403, "forbidden")


def test_other_tenants_ids_and_unknown_ids_are_404(client: TestClient, stack: Stack) -> None:
    _, key = stack.new_key()
    _assert_error(client.get("/v1/content/does-not-exist", headers=auth(key)), 404, "not_found")
    _assert_error(client.get("/v1/jobs/does-not-exist", headers=auth(key)), 404)
    _assert_error(client.get("/v1/nowhere", headers=auth(key)), 404)


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"json": {}}, 422, "validation_error"),
        ({"json": {"title": "   ", "text": ""}}, 422, None),
        ({"content": b"", "headers": {"content-type": "application/json"}}, 422, None),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, None),
        ({"json": ["a", "list"]}, 422, None),
        ({"json": {"title": "x", "unknown_field": 1}}, 422, None),
        ({"json": {"title": "x", "metadata": "not an object"}}, 422, None),
        ({"json": {"text": "a" * 10_001}}, 413, "payload_too_large"),
        ({"data": {"title": "x", "metadata": "{broken"}}, 422, "invalid_metadata"),
        ({"data": {"title": "x", "metadata": "[1, 2]"}}, 422, "invalid_metadata"),
        ({"content": b"title=x", "headers": {"content-type": "text/plain"}}, 415, None),
        ({"files": {"file": ("empty.jpg", b"", "image/jpeg")}}, 422, None),
    ],
    ids=[
        "empty-object",
        "blank-fields",
        "empty-body",
        "invalid-json",
        "json-array",
        "unknown-field",
        "metadata-not-object",
        "huge-text",
        "metadata-invalid-json",
        "metadata-array",
        "wrong-content-type",
        "empty-file",
    ],
)
def test_bad_bodies(
    client: TestClient, stack: Stack, kwargs: dict, status: int, code: str | None
) -> None:
    tenant_id, key = stack.new_key()
    kwargs = dict(kwargs)  # parametrize shares the dict between the two backends
    headers = {**auth(key), **kwargs.pop("headers", {})}
    if "data" in kwargs and "files" not in kwargs:
        # An unrelated empty part forces multipart/form-data instead of urlencoded.
        kwargs["files"] = {"unused": ("", b"")}
    r = client.post("/v1/content", headers=headers, **kwargs)
    _assert_error(r, status, code)
    assert _counts(stack, tenant_id) == (0, 0, 0)


def test_batch_with_one_bad_file_stores_nothing(client: TestClient, stack: Stack) -> None:
    tenant_id, key = stack.new_key()
    blobs_before = _blob_files(stack)
    # The files decode in parallel; the first bad one by position is reported, and the good
    # ones decoded around it leave no blob behind.
    files = [
        ("file", ("ok.jpg", jpeg_bytes(data.coffee()), "image/jpeg")),
        ("file", ("bad.jpg", jpeg_bytes(data.chelsea())[:3000], "image/jpeg")),
        ("file", ("ok2.jpg", jpeg_bytes(data.astronaut()), "image/jpeg")),
        ("file", ("bad.txt", b"not an image at all", "image/jpeg")),
        ("file", ("ok3.jpg", jpeg_bytes(data.rocket()), "image/jpeg")),
    ]
    err = _assert_error(client.post("/v1/content:batch", headers=auth(key), files=files), 422)
    assert err["message"].startswith("items[1]: ") and err["details"]["index"] == 1
    assert _counts(stack, tenant_id) == (0, 0, 0)
    assert _blob_files(stack) == blobs_before


def test_batch_limits(client: TestClient, stack: Stack) -> None:
    _, key = stack.new_key()
    too_many = {"items": [{"title": f"t{i}"} for i in range(101)]}
    _assert_error(client.post("/v1/content:batch", headers=auth(key), json=too_many), 413)
    dupes = {"items": [{"external_id": "a", "title": "1"}, {"external_id": "a", "title": "2"}]}
    _assert_error(client.post("/v1/content:batch", headers=auth(key), json=dupes), 422)
    bad_item = {"items": [{"title": "ok"}, {"text": ""}]}
    err = _assert_error(client.post("/v1/content:batch", headers=auth(key), json=bad_item), 422)
    assert "items[1]" in err["message"]


def test_invalid_query_parameters(client: TestClient, stack: Stack) -> None:
    _, key = stack.new_key()
    _assert_error(client.get("/v1/content?limit=0", headers=auth(key)), 422)
    _assert_error(client.get("/v1/content?cursor=@@@", headers=auth(key)), 422)
    _assert_error(client.get("/v1/content?kind=video", headers=auth(key)), 422)
    r = client.post("/v1/content?on_conflict=merge", headers=auth(key), json={"title": "x"})
    _assert_error(r, 422)


def test_declared_oversize_body_is_refused_before_reading(client: TestClient, stack: Stack) -> None:
    _, key = stack.new_key()
    limit = client.app.state.settings.max_upload_bytes  # type: ignore[attr-defined]
    body = json.dumps({"text": "a"}).encode()
    r = client.post(
        "/v1/content",
        headers={
            **auth(key),
            "content-type": "application/json",
            "content-length": str(limit * 10),
        },
        content=body,
    )
    _assert_error(r, 413)


def test_revoked_key_is_refused(stack: Stack) -> None:
    from shared.auth import revoke_key
    from shared.db.models import ApiKey

    with TestClient(create_app(stack.gateway_settings(api_key_cache_s=0))) as c:
        tenant_id, key = stack.new_key()
        assert c.get("/v1/content", headers=auth(key)).status_code == 200
        with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
            row = s.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant_id)).one()
            revoke_key(s, key_id=row.id)
        _assert_error(c.get("/v1/content", headers=auth(key)), 401, "unauthorized")


# Interaction events outside the sane range (shared/schemas/recommendations.py) are refused with
# a 422 naming the event, and a batch is all or nothing: its valid events are not stored either.


def _event(n: int, **kw: Any) -> dict[str, Any]:
    return {
        "user_id": f"u{n % 3}",
        "item_id": f"range-item-{n}",
        "event_type": "rating",
        "value": 4,
        "timestamp": "2024-05-01T12:00:00Z",
        "event_id": f"range-{n}",
        **kw,
    }


def _interactions(stack: Stack, tenant_id: str) -> list[tuple[float | None, datetime]]:
    with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
        rows = s.execute(
            select(Interaction.value, Interaction.occurred_at)
            .where(Interaction.tenant_id == tenant_id)
            .order_by(Interaction.id)
        ).all()
    return [(v, t) for v, t in rows]


OUT_OF_RANGE = {
    "value-1e308": ({"value": 1e308}, "value"),
    "value-minus-1e308": ({"value": -1e308}, "value"),
    "value-just-above-max": ({"value": MAX_INTERACTION_VALUE + 1}, "value"),
    "value-numeric-string": ({"value": "1e308"}, "value"),  # pydantic's lax path, same rule
    "year-9999": ({"timestamp": "9999-12-31"}, "timestamp"),
    "year-9999-full": ({"timestamp": "9999-12-31T23:59:59Z"}, "timestamp"),
    "year-1": ({"timestamp": "0001-01-01"}, "timestamp"),
    "1969-12-31": ({"timestamp": "1969-12-31"}, "timestamp"),
    "1969-naive": ({"timestamp": "1969-12-31T23:59:59"}, "timestamp"),  # naive = UTC
    "1969-by-offset": ({"timestamp": "1970-01-01T00:30:00+01:00"}, "timestamp"),
    "unix-minus-1": ({"timestamp": -1}, "timestamp"),
}


@pytest.mark.parametrize("case", sorted(OUT_OF_RANGE))
def test_out_of_range_interactions_are_refused_and_store_nothing(
    client: TestClient, stack: Stack, case: str
) -> None:
    tenant_id, key = stack.new_key()
    change, field = OUT_OF_RANGE[case]
    events = [_event(0), _event(1), _event(2, **change), _event(3)]
    r = client.post("/v1/interactions", headers=auth(key), json={"events": events})
    err = _assert_error(r, 422, "validation_error")
    assert err["message"].startswith(f"events[2].{field}: "), err
    assert err["details"] == [{"index": 2, "loc": [2, field], "msg": err["details"][0]["msg"]}]
    # All or nothing: the three valid events are not stored, nor their unknown items created.
    assert _interactions(stack, tenant_id) == []
    assert _counts(stack, tenant_id) == (0, 0, 0)


def test_every_out_of_range_event_of_a_batch_is_named(client: TestClient, stack: Stack) -> None:
    tenant_id, key = stack.new_key()
    events = [
        _event(0, value=1e308),
        _event(1),
        _event(2, timestamp="0001-01-01T00:00:00Z", value=-1e308),
        _event(3, event_type="wink"),
    ]
    r = client.post("/v1/interactions", headers=auth(key), json={"events": events})
    err = _assert_error(r, 422, "validation_error")
    assert err["message"].startswith("events[0].value: ")
    assert [(d["index"], d["loc"][1]) for d in err["details"]] == [
        (0, "value"),
        (2, "value"),
        (2, "timestamp"),
        (3, "event_type"),
    ]
    assert _interactions(stack, tenant_id) == []


def test_interactions_just_inside_the_limits_are_stored(client: TestClient, stack: Stack) -> None:
    tenant_id, key = stack.new_key()
    # The server's clock is read after ours, so its limit is at least this one.
    latest = datetime.now(UTC) + MAX_INTERACTION_CLOCK_SKEW - timedelta(minutes=1)
    events = [
        _event(0, value=MAX_INTERACTION_VALUE),
        _event(1, value=-MAX_INTERACTION_VALUE),
        _event(2, value=MAX_INTERACTION_VALUE - 0.5),
        _event(3, value=str(MAX_INTERACTION_VALUE)),  # the pydantic path
        _event(4, timestamp="1970-01-01T00:00:00Z"),
        _event(5, timestamp="1970-01-01T00:00:00"),  # naive = UTC
        _event(6, timestamp="1970-01-01T01:00:00+01:00"),
        _event(7, timestamp=0),  # Unix epoch, the pydantic path
        _event(8, timestamp=latest.isoformat()),
        _event(9, timestamp=None),  # no timestamp = now
    ]
    r = client.post("/v1/interactions", headers=auth(key), json={"events": events})
    assert r.status_code == 200, r.text
    assert r.json()["stored"] == len(events)
    rows = _interactions(stack, tenant_id)
    assert [v for v, _ in rows[:4]] == [
        MAX_INTERACTION_VALUE,
        -MAX_INTERACTION_VALUE,
        MAX_INTERACTION_VALUE - 0.5,
        MAX_INTERACTION_VALUE,
    ]
    assert [t for _, t in rows[4:8]] == [MIN_INTERACTION_TIME] * 4
    assert abs(rows[8][1] - latest) < timedelta(milliseconds=1)


def test_interactions_too_far_ahead_of_the_clock_are_refused(
    client: TestClient, stack: Stack
) -> None:
    tenant_id, key = stack.new_key()
    ahead = datetime.now(UTC) + MAX_INTERACTION_CLOCK_SKEW + timedelta(minutes=5)
    events = [_event(0), _event(1, timestamp=ahead.isoformat())]
    r = client.post("/v1/interactions", headers=auth(key), json={"events": events})
    err = _assert_error(r, 422, "validation_error")
    assert err["message"].startswith("events[1].timestamp: must not be more than 24 hours ahead")
    assert _interactions(stack, tenant_id) == []

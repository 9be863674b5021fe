"""The client's own behaviour, each against a tiny real HTTP handler (httpx.MockTransport is a
real httpx transport running the handler below): error mapping, retries, Retry-After, webhook
signatures, events from CSV."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import httpx
import pytest
from atelier_client import (
    Atelier,
    Conflict,
    InvalidSignature,
    NotFound,
    RateLimited,
    RetryPolicy,
    Unauthorized,
    Unavailable,
    ValidationError,
    parse_delivery,
    read_events,
    verify_signature,
)
from atelier_client.webhooks import sign


def _error(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"error": {"code": code, "message": f"{code}!", "details": {"id": "x"}}}
    return httpx.Response(status, json=body, headers=headers)


def _client(handler: httpx.MockTransport, **kw: object) -> Atelier:
    client = Atelier("http://atelier.test", "k", transport=handler, **kw)  # type: ignore[arg-type]
    client._transport.sleep = lambda _s: None  # no real waiting in unit tests
    return client


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (401, "unauthorized", Unauthorized),
        (404, "not_found", NotFound),
        (409, "conflict", Conflict),
        (415, "unsupported_media_type", ValidationError),
        (422, "corrupt_image", ValidationError),
    ],
)
def test_errors_carry_code_message_status(status: int, code: str, cls: type) -> None:
    client = _client(httpx.MockTransport(lambda _r: _error(status, code)))
    with pytest.raises(cls) as info:
        client.content.get("abc")
    assert (info.value.status, info.value.code, info.value.message) == (status, code, f"{code}!")
    assert info.value.details == {"id": "x"}


def test_get_is_retried_on_503_honouring_retry_after_then_succeeds() -> None:
    calls: list[str] = []
    waits: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        assert request.headers["authorization"] == "Bearer k"
        if len(calls) < 3:
            return _error(503, "not_ready", {"Retry-After": "2"})
        return httpx.Response(200, json={"status": "ok"})

    client = _client(httpx.MockTransport(handler))
    client._transport.sleep = waits.append
    assert client.health() == {"status": "ok"}
    assert calls == ["GET"] * 3 and waits == [2.0, 2.0]


def test_post_is_not_retried_on_502_but_is_on_429_up_to_the_maximum() -> None:
    seen: list[int] = []

    def bad_gateway(request: httpx.Request) -> httpx.Response:
        seen.append(1)
        return _error(502, "bad_gateway")

    with pytest.raises(Unavailable):
        _client(httpx.MockTransport(bad_gateway)).interactions.send([])
    assert len(seen) == 1

    def limited(request: httpx.Request) -> httpx.Response:
        seen.append(2)
        return _error(429, "too_many_requests", {"Retry-After": "1"})

    with pytest.raises(RateLimited) as info:
        _client(httpx.MockTransport(limited), max_retries=2).interactions.send([])
    assert seen.count(2) == 3 and info.value.retry_after == 1.0


def test_a_retry_after_beyond_the_limit_is_raised_at_once() -> None:
    n: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        n.append(1)
        return _error(503, "model_not_ready", {"Retry-After": "600"})

    policy = RetryPolicy(max_retries=5, max_retry_after_s=60)
    with pytest.raises(Unavailable) as info:
        _client(httpx.MockTransport(handler), retry=policy).generate.text("x")
    assert len(n) == 1 and info.value.code == "model_not_ready"


def test_webhook_signature_matches_the_workers_scheme() -> None:
    body = json.dumps({"event": "job.finished", "job": {"id": "j"}}, separators=(",", ":"))
    raw = body.encode()
    expected = "sha256=" + hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
    assert sign("s3cret", raw) == expected
    assert verify_signature("s3cret", raw, expected)
    assert not verify_signature("other", raw, expected)
    assert not verify_signature("s3cret", raw + b" ", expected)
    assert not verify_signature("s3cret", raw, None)
    headers = {"X-Atelier-Signature": expected, "X-Atelier-Delivery": "d1"}
    assert parse_delivery("s3cret", raw, headers)["delivery"] == "d1"
    with pytest.raises(InvalidSignature):
        parse_delivery("nope", raw, headers)


def test_timestamped_signatures_are_checked_and_old_ones_refused() -> None:
    raw = b'{"event":"job.finished"}'
    value = sign("s3cret", raw, "1700000000")
    assert verify_signature("s3cret", raw, value, timestamp="1700000000", now=1700000100)
    assert not verify_signature("s3cret", raw, value, timestamp="1700000001", now=1700000100)
    assert not verify_signature("s3cret", raw, value, timestamp="1700000000", now=1700009999)


def test_the_server_signs_as_the_client_verifies() -> None:
    """Whichever signing code this checkout has: the body-only HMAC of workers/webhooks.py, or
    the timestamped one of shared/webhooks.py."""
    try:
        from shared.webhooks import sign as server_sign  # type: ignore[import-not-found]

        headers = server_sign("k", b"{}")
    except ImportError:
        pytest.importorskip("celery")
        from workers.webhooks import sign as body_sign  # type: ignore[attr-defined]

        headers = {"X-Atelier-Signature": body_sign("k", b"{}")}
    assert parse_delivery("k", b"{}", headers)["delivery"] is None


def test_events_from_csv_get_stable_ids_and_aliases(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "user,item,event,timestamp\n"
        "u1,a,like,1714564800\n"
        "u1,a,like,1714564800\n"
        "u2,b,,2024-05-01T12:00:00Z\n"
    )
    first = list(read_events(path))
    assert [e["event_type"] for e in first] == ["like", "like", "view"]
    assert first[0]["timestamp"] == "2024-05-01T12:00:00+00:00"
    ids = [e["event_id"] for e in first]
    assert len(set(ids)) == 3  # two identical rows are two events
    assert [e["event_id"] for e in read_events(path)] == ids  # and the same ids next time

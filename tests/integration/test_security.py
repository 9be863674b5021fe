"""Hostile input never reaches a 500, internal calls are authenticated, requests are rate
limited and webhooks cannot be pointed inside the deployment; nothing is stored by a refusal."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.gateway.main import create_app
from services.gateway.rate_limit import RateLimiter
from services.recommender.main import create_app as create_recommender
from shared import internal_auth
from shared.auth import create_api_key
from shared.config import RecommenderSettings
from shared.db.models import ContentItem, Interaction, Job, Tag, Webhook
from shared.db.session import session_scope
from shared.schemas.recommendations import TENANT_HEADER
from shared.webhooks import TargetRefused, verify_signature
from tests.conftest import Stack
from tests.helpers import auth
from tests.integration.test_webhooks import Receiver
from workers.context import WorkerContext
from workers.webhooks import deliver

pytestmark = pytest.mark.integration


@pytest.fixture
def client(stack: Stack) -> Iterator[TestClient]:
    with TestClient(create_app(stack.gateway_settings())) as c:
        yield c


def _count(stack: Stack, model: Any, tenant_id: str) -> int:
    with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
        n = s.scalar(select(func.count()).select_from(model).where(model.tenant_id == tenant_id))
    return int(n or 0)


def _stored(stack: Stack, tenant_id: str) -> tuple[int, int, int, int]:
    return tuple(  # type: ignore[return-value]
        _count(stack, m, tenant_id) for m in (ContentItem, Job, Interaction, Webhook)
    )


def _error(r: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


def _post_json(client: TestClient, url: str, key: str, body: Any) -> Any:
    # Encoded by hand: json.dumps escapes lone surrogates, which httpx's encoder cannot write.
    return client.post(
        url,
        content=json.dumps(body).encode(),
        headers={**auth(key), "content-type": "application/json"},
    )


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


# ---- row 1: JSON depth and size ------------------------------------------------------------


def test_deeply_nested_json_is_a_422_before_parsing(client: TestClient, stack: Stack) -> None:
    tenant_id, key = stack.new_key(scopes=("read", "write", "admin"))
    deep = '{"title": "x", "metadata": ' + '{"a":' * 5000 + "1" + "}" * 5000 + "}"
    headers = {**auth(key), "content-type": "application/json"}
    for url in ("/v1/content", "/v1/content:batch", "/v1/interactions", "/v1/webhooks"):
        err = _error(client.post(url, content=deep, headers=headers), 422, "validation_error")
        assert "deeper than 32" in err["message"]
    # Without a content type FastAPI would parse JSON all the same: the same limit.
    r = client.post("/v1/content", content=deep, headers=auth(key))
    _error(r, 422)
    # Depth in a multipart JSON field.
    r = client.post(
        "/v1/content",
        headers=auth(key),
        data={"title": "x", "metadata": json.dumps(_nested(200))},
        files={"unused": ("", b"", "text/plain")},
    )
    _error(r, 422)
    assert _stored(stack, tenant_id) == (0, 0, 0, 0)
    # Within the limit is fine: the body is one level, metadata 30 more.
    ok = _post_json(client, "/v1/content", key, {"title": "x", "metadata": _nested(30)})
    assert ok.status_code == 202, ok.text


def test_json_body_over_max_json_bytes_is_a_413(stack: Stack) -> None:
    tenant_id, key = stack.new_key()
    with TestClient(create_app(stack.gateway_settings(max_json_bytes=1000))) as c:
        r = _post_json(c, "/v1/content", key, {"title": "x", "text": "y" * 2000})
        _error(r, 413, "payload_too_large")
        assert _post_json(c, "/v1/content", key, {"title": "x"}).status_code == 202
    assert _count(stack, ContentItem, tenant_id) == 1


def test_the_recommender_has_the_same_json_limits(stack: Stack) -> None:
    with TestClient(create_recommender(_reco_settings(stack))) as reco:
        deep = "[" * 5000 + "]" * 5000
        r = reco.post("/internal/v1/users/u/recommendations", content=deep)
        _error(r, 422, "validation_error")


# ---- row 2: NUL and lone surrogates -------------------------------------------------------

BAD_CONTENT = {
    "text-nul": ({"text": "a\x00b"}, "text"),
    "title-surrogate": ({"title": "a\ud800b"}, "title"),
    "external-id-nul": ({"title": "x", "external_id": "e\x00"}, "external_id"),
    "metadata-value-nested": ({"title": "x", "metadata": {"a": [{"b": "c\x00"}]}}, "metadata"),
    "metadata-key-nested": ({"title": "x", "metadata": {"a": {"k\x00": 1}}}, "metadata"),
    "metadata-key-surrogate": ({"title": "x", "metadata": {"\udc80": 1}}, "metadata"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONTENT))
def test_nul_and_surrogates_in_content_are_a_422_naming_the_field(
    client: TestClient, stack: Stack, case: str
) -> None:
    tenant_id, key = stack.new_key()
    body, field = BAD_CONTENT[case]
    err = _error(_post_json(client, "/v1/content", key, body), 422)
    assert err["message"].startswith(f"{field}:"), err
    batch = {"items": [{"title": "ok"}, body]}
    err = _error(_post_json(client, "/v1/content:batch", key, batch), 422)
    assert "items" in err["message"] and field in err["message"], err
    assert _stored(stack, tenant_id) == (0, 0, 0, 0)


def test_nul_in_multipart_fields_is_a_422(client: TestClient, stack: Stack) -> None:
    tenant_id, key = stack.new_key()
    for data, field in (
        ({"title": "x", "text": "a\x00b"}, "text"),
        ({"title": "x", "metadata": '{"k": "v\\u0000"}'}, "metadata"),
    ):
        r = client.post(
            "/v1/content", headers=auth(key), data=data, files={"f": ("", b"", "text/plain")}
        )
        assert field in _error(r, 422)["message"]
    assert _stored(stack, tenant_id) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    "field", ["user_id", "item_id", "event_type", "event_id", "user_id-surrogate"]
)
def test_nul_in_an_event_is_a_422_naming_the_event_and_field(
    client: TestClient, stack: Stack, field: str
) -> None:
    tenant_id, key = stack.new_key()
    name, bad = (field.split("-")[0], "u\ud800") if "surrogate" in field else (field, "x\x00y")
    good = {"user_id": "u1", "item_id": "i1", "event_type": "view", "event_id": "e1"}
    events = [good, {**good, "event_id": "e2", name: bad}]
    err = _error(_post_json(client, "/v1/interactions", key, {"events": events}), 422)
    assert err["message"].startswith(f"events[1].{name}:"), err
    assert _stored(stack, tenant_id) == (0, 0, 0, 0)


def test_nul_in_tags_vocabulary_and_urls_is_a_422(client: TestClient, stack: Stack) -> None:
    tenant_id, key = stack.new_key(scopes=("read", "write", "admin"))
    created = _post_json(client, "/v1/content", key, {"title": "tag me"})
    cid = created.json()["id"]
    r = _post_json(client, f"/v1/content/{cid}/tags", key, {"tags": [{"name": "t\x00"}]})
    assert "tags.0.name" in _error(r, 422)["message"]
    r = client.put(
        "/v1/vocabulary",
        content=json.dumps([{"name": "ok", "descriptions": ["d\x00"]}]),
        headers={**auth(key), "content-type": "application/json"},
    )
    assert "descriptions" in _error(r, 422)["message"]
    _error(client.get("/v1/content", params={"external_id": "a\x00"}, headers=auth(key)), 422)
    _error(client.delete(f"/v1/content/{cid}/tags/t%00", headers=auth(key)), 422)
    with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
        # A worker may have tagged the item meanwhile; the refused tag is not among them.
        names = s.scalars(select(Tag.name).where(Tag.content_id == cid)).all()
        assert not [n for n in names if n.startswith("t\x00") or n == "t"]
    assert _count(stack, ContentItem, tenant_id) == 1


# ---- row 4: signed internal calls ---------------------------------------------------------


def _reco_settings(stack: Stack, **overrides: Any) -> RecommenderSettings:
    return RecommenderSettings(
        environment="test",
        database_url=stack.db_url,
        models_dir=stack.models_dir,
        **overrides,
    )


def test_internal_api_refuses_unsigned_forged_and_replayed_calls(stack: Stack) -> None:
    tenant_id, _ = stack.new_key()
    settings = _reco_settings(stack, internal_secret="s" * 40)
    target = "/internal/v1/users/u%201/recommendations?limit=5&tag=a%20b"

    def signed(**kw: Any) -> dict[str, str]:
        args: dict[str, Any] = {
            "method": "GET",
            "target": target,
            "tenant": tenant_id,
            "secret": "s" * 40,
        }
        args.update(kw)
        return {TENANT_HEADER: tenant_id, **internal_auth.sign(args.pop("secret"), **args)}

    with TestClient(create_recommender(settings)) as reco:
        # The forged tenant header of issue 16, with no credential.
        _error(reco.get(target, headers={TENANT_HEADER: tenant_id}), 401, "unauthorized")
        _error(reco.get(target, headers=signed(secret="t" * 40)), 401)
        _error(reco.get(target, headers=signed(now=time.time() - 61)), 401)
        _error(reco.get(target, headers=signed(now=time.time() + 61)), 401)
        # Signed for one tenant, sent for another; signed for one query, sent with another.
        _error(reco.get(target, headers={**signed(), TENANT_HEADER: "other"}), 401)
        _error(reco.get(target.replace("limit=5", "limit=6"), headers=signed()), 401)
        r = reco.get(target, headers=signed())
        assert r.status_code == 200, r.text
        assert r.json()["user_id"] == "u 1"


# ---- row 5: rate limits -------------------------------------------------------------------


def test_requests_over_the_key_limit_get_429_with_retry_after(stack: Stack) -> None:
    tenant_id, key = stack.new_key()
    _, other = stack.new_key()
    settings = stack.gateway_settings(rate_limit_key_rps=0.2, rate_limit_key_burst=2)
    with TestClient(create_app(settings)) as c:
        assert c.get("/v1/content", headers=auth(key)).status_code == 200
        assert c.get("/v1/content", headers=auth(key)).status_code == 200
        r = _post_json(c, "/v1/content", key, {"title": "over the limit"})
        err = _error(r, 429, "too_many_requests")
        assert 1 <= int(r.headers["retry-after"]) <= 5
        assert err["details"]["limit"] == "api key"
        # Another key has its own bucket; unauthenticated routes are not limited.
        assert c.get("/v1/content", headers=auth(other)).status_code == 200
        assert c.get("/healthz").status_code == 200
    assert _stored(stack, tenant_id) == (0, 0, 0, 0)


def test_the_tenant_limit_spans_its_keys(stack: Stack) -> None:
    tenant_id, key = stack.new_key()
    with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
        _, second = create_api_key(s, tenant_id=tenant_id, scopes=["read"])
    settings = stack.gateway_settings(
        rate_limit_key_rps=0, rate_limit_tenant_rps=0.2, rate_limit_tenant_burst=2
    )
    with TestClient(create_app(settings)) as c:
        assert c.get("/v1/content", headers=auth(key)).status_code == 200
        assert c.get("/v1/content", headers=auth(second)).status_code == 200
        r = c.get("/v1/content", headers=auth(second))
        assert _error(r, 429)["details"]["limit"] == "tenant"
        assert "retry-after" in r.headers


def test_the_limiter_fails_open_when_redis_is_unreachable(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    _, key = stack.new_key()
    with TestClient(create_app(stack.gateway_settings())) as c:
        c.app.state.rate_limiter = RateLimiter(  # type: ignore[attr-defined]
            "redis://127.0.0.1:1/0", key_rps=0.1, key_burst=1, tenant_rps=0, tenant_burst=1
        )
        with caplog.at_level(logging.WARNING, logger="services.gateway.rate_limit"):
            for _ in range(3):
                assert c.get("/v1/content", headers=auth(key)).status_code == 200
        assert "rate limiter unavailable" in caplog.text


# ---- row 6: webhook targets ---------------------------------------------------------------

PRIVATE_TARGETS = [
    "http://127.0.0.1:8080/hook",
    "http://localhost/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest",
    "http://10.1.2.3/hook",
    "http://[::1]/hook",
    "http://[::ffff:192.168.0.1]/hook",
]


def test_private_webhook_targets_are_refused_at_registration(
    client: TestClient, stack: Stack
) -> None:
    tenant_id, admin = stack.new_key(scopes=("admin",))
    for url in PRIVATE_TARGETS:
        r = client.post("/v1/webhooks", headers=auth(admin), json={"url": url})
        assert "public addresses only" in _error(r, 422, "validation_error")["message"], url
    assert _count(stack, Webhook, tenant_id) == 0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def test_delivery_checks_the_resolved_address_again(stack: Stack, receiver: Receiver) -> None:
    _, admin = stack.new_key(scopes=("read", "write", "admin"))
    allowing = stack.gateway_settings(webhook_allow_private_targets=True)
    with TestClient(create_app(allowing)) as c:
        # Registered where private targets were allowed; "localhost" resolves at delivery.
        url = receiver.url.replace("127.0.0.1", "localhost")
        # A job type that no test runs, so no worker delivers on its own.
        hook = c.post(
            "/v1/webhooks", headers=auth(admin), json={"url": url, "job_types": ["generate_text"]}
        )
        assert hook.status_code == 201, hook.text
        job_id = _post_json(c, "/v1/content", admin, {"title": "x"}).json()["job_id"]
    hook_id, secret = hook.json()["id"], hook.json()["secret"]

    refusing = WorkerContext(settings=stack.worker_settings())
    with pytest.raises(TargetRefused, match="loopback"):
        deliver(refusing, hook_id, job_id)
    assert receiver.requests == []

    allowed = WorkerContext(settings=stack.worker_settings(webhook_allow_private_targets=True))
    assert deliver(allowed, hook_id, job_id) == 204
    headers, body = receiver.requests[0]
    assert headers["host"] == f"localhost:{receiver.server.server_port}"
    assert verify_signature(
        secret,
        body,
        timestamp=headers["x-atelier-timestamp"],
        signature_header=headers["x-atelier-signature"],
    )

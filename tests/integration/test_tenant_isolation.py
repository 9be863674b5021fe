"""The multi-tenant walk: tenant B calls every gateway route with tenant A's ids.

Tenant A gets one of every kind of resource (image and text items, tags, events, jobs, a
webhook, a tagger, tenant model versions, a vocabulary, a recommender config). Then B's key
(every scope) calls every route of the gateway's OpenAPI schema, so a new route is walked
without editing this test: a route with ids gets A's ids and must answer exactly as it does for
ids that exist nowhere (404, never 200 with data, never a 403 that tells A's ids exist, never a
5xx); a route without ids must not show any of A's data. Finally A's rows are as they were.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select

from services.gateway.main import create_app
from services.recommender.main import create_app as create_recommender
from shared.config import RecommenderSettings
from shared.db.model_versions import record_version
from shared.db.models import (
    ContentItem,
    Interaction,
    Job,
    JobStatus,
    ModelVersion,
    Tag,
    Tagger,
    Webhook,
)
from shared.db.session import session_scope
from shared.inference.manifest import Manifest, publish_model_dir, write_manifest
from shared.model_versions import set_active_version, tagger_model_name, tenant_model_name
from tests.conftest import BUNDLED_MODELS, Stack
from tests.helpers import auth, jpeg_bytes
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

# Operator endpoints: no API key, nothing of a tenant's.
UNSCOPED = {"/healthz", "/readyz", "/metrics"}
MARKER = "zanzibar-quokka"  # in A's texts, tags and vocabulary: must never reach B


@dataclass
class TenantA:
    tenant_id: str
    key: str
    ids: dict[str, list[str]] = field(default_factory=dict)

    def secrets(self) -> set[str]:
        """Strings that only A's data contains."""
        values = {v for vs in self.ids.values() for v in vs if v not in ("0001", "original")}
        return values - {"thumbnail"} | {self.tenant_id, MARKER}


def _recommender(stack: Stack) -> Iterator[str]:
    reco = create_recommender(
        RecommenderSettings(
            environment="test",
            database_url=stack.db_url,
            models_dir=stack.models_dir,
            model_check_interval_s=0.0,
        )
    )
    server = uvicorn.Server(
        uvicorn.Config(reco, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not (server.started and server.servers):
        assert time.monotonic() < deadline, "the recommender did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def client(pg_url: str, models_dir: Path, tmp_path: Path) -> Iterator[tuple[Stack, TestClient]]:
    (tmp_path / "redis").mkdir()
    redis_server = RedisServer(tmp_path / "redis")  # jobs are published where no worker reads
    models = tmp_path / "models"
    models.mkdir()
    for name in BUNDLED_MODELS:
        if (models_dir / name).is_dir():
            (models / name).symlink_to((models_dir / name).resolve())
    stack = Stack("isolation", pg_url, redis_server.url, tmp_path / "blobs", models)
    try:
        for reco_url in _recommender(stack):
            settings = stack.gateway_settings(
                recommender_url=reco_url,
                webhook_allow_private_targets=True,
                rate_limit_key_rps=0,
            )
            with TestClient(create_app(settings)) as c:
                yield stack, c
    finally:
        redis_server.stop()


def _tenant_model(stack: Stack, tenant_id: str, name: str, kind: str) -> None:
    """A version of a tenant-owned model on disk and in SQL, as a training job leaves it."""
    with publish_model_dir(stack.models_dir, name, "0001") as tmp:
        (tmp / "weights.bin").write_bytes(MARKER.encode())
        write_manifest(tmp, Manifest(name=name, version="0001", kind=kind))
    set_active_version(stack.models_dir, name, "0001")
    with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
        record_version(
            s, tenant_id=tenant_id, name=name, version="0001", kind=kind, metrics={}, job_id=None
        )
        s.commit()


def _populate(stack: Stack, c: TestClient) -> TenantA:
    tenant_id, key = stack.new_key(("read", "write", "admin"))
    a = TenantA(tenant_id, key)
    h = auth(key)
    text = c.post(
        "/v1/content",
        headers=h,
        json={"external_id": f"a-text-{MARKER}", "text": f"the {MARKER} of tenant A"},
    )
    assert text.status_code == 202, text.text
    rng = np.random.default_rng(0)
    photo = jpeg_bytes(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    image = c.post(
        "/v1/content",
        headers=h,
        files={"file": ("a.jpg", photo, "image/jpeg")},
        data={"external_id": f"a-image-{MARKER}"},
    )
    assert image.status_code == 202, image.text
    content_ids = [text.json()["id"], image.json()["id"]]
    tag = f"{MARKER}-tag"
    r = c.post(f"/v1/content/{content_ids[0]}/tags", headers=h, json={"tags": [{"name": tag}]})
    assert r.status_code == 200, r.text
    user = f"a-user-{MARKER}"
    events = [
        {"user_id": user, "item_id": f"a-text-{MARKER}", "event_type": "like",
         "event_id": f"a-evt-{i}", "timestamp": "2024-05-01T12:00:00Z"}
        for i in range(3)
    ]  # fmt: skip
    assert c.post("/v1/interactions", headers=h, json={"events": events}).status_code == 200
    hook = c.post("/v1/webhooks", headers=h, json={"url": f"http://127.0.0.1:9/{MARKER}"})
    assert hook.status_code == 201, hook.text
    tagger = c.post(
        "/v1/taggers", headers=h, json={"name": MARKER, "kind": "text", "labels": [tag, "other"]}
    )
    assert tagger.status_code == 201, tagger.text
    tagger_id = tagger.json()["id"]
    r = c.post(
        f"/v1/taggers/{tagger_id}/examples",
        headers=h,
        json={"examples": [{"content_id": content_ids[0], "label": tag}]},
    )
    assert r.status_code == 200, r.text
    vocab = {"entries": [{"name": f"{MARKER}-entry", "descriptions": [f"a {MARKER}"]}]}
    assert c.put("/v1/vocabulary", headers=h, json=vocab).status_code == 200
    weights = {"event_weights": {"like": 3.5, "view": 1.0}}
    assert c.put("/v1/recommender/config", headers=h, json=weights).status_code == 200
    _tenant_model(stack, tenant_id, tagger_model_name(tagger_id), "tenant_tagger")
    generator = tenant_model_name("text_generator", tenant_id)
    _tenant_model(stack, tenant_id, generator, "text_generator")
    with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
        job_ids = list(s.scalars(select(Job.id).where(Job.tenant_id == tenant_id)))
    a.ids = {
        "content_id": content_ids,
        "item_id": [*content_ids, f"a-text-{MARKER}"],
        "job_id": job_ids,
        "tagger_id": [tagger_id],
        "webhook_id": [hook.json()["id"]],
        "user_id": [user],
        # `name` is a tag's on content routes and a model's on model routes: try each.
        "name": [tag, tagger_model_name(tagger_id), generator],
        "version": ["0001"],
        "role": ["original", "thumbnail"],
    }
    return a


def _snapshot(stack: Stack, tenant_id: str) -> dict[str, Any]:
    """A's rows, as B's calls must leave them."""
    with session_scope(stack.gateway_settings().sqlalchemy_url) as s:

        def rows(model: Any, *cols: Any) -> list[tuple[Any, ...]]:
            stmt = select(*cols).where(model.tenant_id == tenant_id).order_by(*cols)
            return [tuple(r) for r in s.execute(stmt)]

        return {
            "items": rows(ContentItem, ContentItem.id, ContentItem.external_id, ContentItem.text),
            "tags": s.execute(
                select(Tag.content_id, Tag.name, Tag.source)
                .join(ContentItem, ContentItem.id == Tag.content_id)
                .where(ContentItem.tenant_id == tenant_id)
                .order_by(Tag.content_id, Tag.name)
            ).all(),
            "jobs": rows(Job, Job.id, Job.status, Job.cancel_requested),
            "events": s.scalar(
                select(func.count()).where(Interaction.tenant_id == tenant_id)
            ),
            "webhooks": rows(Webhook, Webhook.id, Webhook.url, Webhook.active),
            "taggers": rows(Tagger, Tagger.id, Tagger.name),
            "versions": rows(ModelVersion, ModelVersion.name, ModelVersion.version,
                             ModelVersion.active),
        }  # fmt: skip


# Valid bodies, so that validation never answers before the handler looks the ids up.
def _body(method: str, path: str, a: TenantA) -> dict[str, Any] | None:
    text_id, ext = a.ids["content_id"][0], a.ids["item_id"][-1]
    image_ext = ext.replace("a-text-", "a-image-")
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("POST", "/v1/content"): {"text": "B's own text", "external_id": ext},
        ("POST", "/v1/content:batch"): {"items": [{"text": "B's", "external_id": image_ext}]},
        ("POST", "/v1/content/{content_id}/tags"): {"tags": [{"name": "b-tag"}]},
        ("POST", "/v1/interactions"): {
            "events": [
                {
                    "user_id": a.ids["user_id"][0],
                    "item_id": item,
                    "event_type": "like",
                    "event_id": f"a-evt-{i}",
                    "timestamp": "2024-05-02T12:00:00Z",
                }
                for i, item in enumerate(a.ids["item_id"])
            ]
        },
        ("PUT", "/v1/recommender/config"): {"event_weights": {"like": 1.0}},
        ("PUT", "/v1/vocabulary"): {"entries": [{"name": "b-entry"}]},
        ("POST", "/v1/taggers"): {"name": "b", "kind": "text", "labels": ["x", "y"]},
        ("POST", "/v1/taggers/{tagger_id}/examples"): {
            "examples": [{"content_id": text_id, "label": "x"}]
        },
        ("POST", "/v1/webhooks"): {"url": "http://127.0.0.1:9/b"},
        ("POST", "/v1/generate/text"): {"prompt": "hi", "model_version": "0001"},
        ("POST", "/v1/generate/images"): {"n": 1, "model_version": "0001"},
        ("POST", "/v1/generate/images:interpolate"): {
            "seed_a": 1,
            "seed_b": 2,
            "model_version": "0001",
        },
        ("POST", "/v1/generators/text:train"): {},
        ("POST", "/v1/generators/images:train"): {},
        ("POST", "/v1/recommender/train"): {},
    }
    return bodies.get((method, path))


def _routes(c: TestClient) -> list[tuple[str, str, list[str]]]:
    schema = c.get("/openapi.json").json()
    out = []
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            params = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
            out.append((method.upper(), path, params))
    return out


def _call(c: TestClient, method: str, path: str, key: str, body: Any) -> Response:
    query = {"wait": "0"} if path.startswith("/v1/generate") else None
    return c.request(method, path, headers=auth(key), json=body, params=query)


def _leaks(r: Response, a: TenantA, sent: str = "") -> list[str]:
    """A's strings in the answer, but for those the request itself carried."""
    return sorted(s for s in a.secrets() if s in r.text and s not in sent)


def _nowhere(name: str) -> str:
    """A value of the same shape as A's that no tenant has."""
    if name in ("name", "user_id", "version"):
        return f"nowhere-{uuid.uuid4().hex[:8]}"
    return str(uuid.uuid4())


def test_tenant_b_sees_none_of_tenant_a_on_any_route(client: tuple[Stack, TestClient]) -> None:
    stack, c = client
    a = _populate(stack, c)
    before = _snapshot(stack, a.tenant_id)
    _, key_b = stack.new_key(("read", "write", "admin"))
    problems: list[str] = []
    routes = _routes(c)
    assert len(routes) >= 40, routes  # the schema really lists the API
    # Reads first, then writes, deletes last: a leaking delete would hide later leaks.
    order = {"GET": 0, "PUT": 1, "POST": 1, "DELETE": 2}
    for method, path, params in sorted(routes, key=lambda r: order[r[0]]):
        unknown = [p for p in params if p not in a.ids]
        assert not unknown, f"{method} {path}: give the walk A's values for {unknown}"
        body = _body(method, path, a)
        if not params:
            if path in UNSCOPED:
                continue
            r = _call(c, method, path, key_b, body)
            sent = json.dumps(body)
            if r.status_code >= 500 or r.status_code == 409 or _leaks(r, a, sent):
                problems.append(f"{method} {path}: {r.status_code} {_leaks(r, a, sent)} "
                                f"{r.text[:200]}")  # fmt: skip
            continue
        for values in itertools.product(*(a.ids[p] for p in params)):
            real = dict(zip(params, values, strict=True))
            fake = {p: (v if p == "role" else _nowhere(p)) for p, v in real.items()}
            r = _call(c, method, path.format(**real), key_b, body)
            control = _call(c, method, path.format(**fake), key_b, body)
            where = f"{method} {path.format(**real)}"
            # A 403 or an answer unlike the control's tells B that A's id exists.
            if r.status_code != control.status_code or r.status_code == 403 or r.status_code >= 500:
                problems.append(f"{where}: {r.status_code} (nowhere: {control.status_code}) "
                                f"{r.text[:200]}")  # fmt: skip
            elif r.status_code < 300 and "user_id" not in params:
                problems.append(f"{where}: {r.status_code} for A's id {r.text[:200]}")
            elif leaked := _leaks(r, a, where + json.dumps(body)):
                problems.append(f"{where}: shows {leaked}: {r.text[:200]}")
            elif _shape(r.text, real) != _shape(control.text, fake):
                problems.append(f"{where}: answers differ: {r.text[:200]} / {control.text[:200]}")
    assert not problems, "\n".join(problems)
    assert _snapshot(stack, a.tenant_id) == before
    # B's own external id equal to A's made B's item, not a conflict with A's.
    with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
        owners = set(
            s.scalars(
                select(ContentItem.tenant_id).where(ContentItem.external_id == a.ids["item_id"][-1])
            )
        )
    assert len(owners) == 2 and a.tenant_id in owners
    for job in before["jobs"]:
        assert job[1] != JobStatus.cancelled


def _shape(text: str, values: dict[str, str]) -> str:
    """The answer with the ids it echoes taken out, and the request id."""
    for v in values.values():
        text = text.replace(v, "<id>")
    try:
        body = json.loads(text)
    except ValueError:
        return text
    return re.sub(r'"request_id":\s*"[^"]*"', "", json.dumps(body, sort_keys=True))

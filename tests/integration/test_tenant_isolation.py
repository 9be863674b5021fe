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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from shared.db.models import ContentItem, JobStatus
from shared.db.session import session_scope
from tests.conftest import Stack, WorkerProcess
from tests.helpers import auth, wait_job
from tests.tenant_walk import (
    A_TEXT,
    MARKER,
    TenantA,
    a_photo,
    leaks,
    nowhere,
    populate,
    shape,
    snapshot,
    walk_client,
)

pytestmark = pytest.mark.integration

# Operator endpoints: no API key, nothing of a tenant's.
UNSCOPED = {"/healthz", "/readyz", "/metrics"}


@pytest.fixture
def client(pg_url: str, models_dir: Path, tmp_path: Path) -> Iterator[tuple[Stack, TestClient]]:
    with walk_client(pg_url, models_dir, tmp_path) as stack_and_client:
        yield stack_and_client


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


def _query(method: str, path: str, a: TenantA) -> dict[str, Any]:
    """Reads filter by A's tag and seed or exclude A's text item (the recommender's forwarded
    parameters): B must still see none of A's other items. Parameters a route does not take
    are ignored."""
    if method != "GET":
        return {"wait": "0"} if path.startswith("/v1/generate") else {}
    seeds = [a.ids["content_id"][0], a.ids["item_id"][-1]]
    return {"tag": a.ids["name"][0], "seed_items": seeds, "exclude": seeds}


def _call(c: TestClient, method: str, path: str, key: str, body: Any, a: TenantA) -> Any:
    query = _query(method, path, a)
    return c.request(method, path, headers=auth(key), json=body, params=query)


def test_tenant_b_sees_none_of_tenant_a_on_any_route(client: tuple[Stack, TestClient]) -> None:
    stack, c = client
    a = populate(stack, c)
    before = snapshot(stack, a.tenant_id)
    tenant_b, key_b = stack.new_key(("read", "write", "admin"))
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
            r = _call(c, method, path, key_b, body, a)
            sent = json.dumps([body, _query(method, path, a)])
            if r.status_code >= 500 or r.status_code == 409 or leaks(r, a, sent):
                problems.append(f"{method} {path}: {r.status_code} {leaks(r, a, sent)} "
                                f"{r.text[:200]}")  # fmt: skip
            continue
        for values in itertools.product(*(a.ids[p] for p in params)):
            real = dict(zip(params, values, strict=True))
            fake = {p: (v if p == "role" else nowhere(p)) for p, v in real.items()}
            r = _call(c, method, path.format(**real), key_b, body, a)
            control = _call(c, method, path.format(**fake), key_b, body, a)
            where = f"{method} {path.format(**real)}"
            # A 403 or an answer unlike the control's tells B that A's id exists.
            if r.status_code != control.status_code or r.status_code == 403 or r.status_code >= 500:
                problems.append(f"{where}: {r.status_code} (nowhere: {control.status_code}) "
                                f"{r.text[:200]}")  # fmt: skip
            elif r.status_code < 300 and "user_id" not in params:
                problems.append(f"{where}: {r.status_code} for A's id {r.text[:200]}")
            elif leaked := leaks(r, a, where + json.dumps([body, _query(method, path, a)])):
                problems.append(f"{where}: shows {leaked}: {r.text[:200]}")
            elif shape(r.text, real) != shape(control.text, fake):
                problems.append(f"{where}: answers differ: {r.text[:200]} / {control.text[:200]}")
    assert not problems, "\n".join(problems)
    assert snapshot(stack, a.tenant_id) == before
    # B's own external id equal to A's made B's item, not a conflict with A's. (Other tests'
    # tenants on this database use the same external ids, hence the filter on A and B.)
    with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
        owners = set(
            s.scalars(
                select(ContentItem.tenant_id).where(
                    ContentItem.external_id == a.ids["item_id"][-1],
                    ContentItem.tenant_id.in_([a.tenant_id, tenant_b]),
                )
            )
        )
    assert owners == {a.tenant_id, tenant_b}
    for job in before["jobs"]:
        assert job[1] != JobStatus.cancelled


def test_same_bytes_in_two_tenants_stay_apart_through_tagging_and_deletion(
    client: tuple[Stack, TestClient], tmp_path: Path
) -> None:
    """B uploads A's very image and text. Blobs are shared by content, tags, duplicates and
    similar items are computed by the worker: none of it may cross from A to B."""
    stack, c = client
    a = populate(stack, c)
    _, key_b = stack.new_key(("read", "write"))
    hb = auth(key_b)
    image = c.post("/v1/content", headers=hb, files={"file": ("b.jpg", a_photo(), "image/jpeg")})
    text = c.post("/v1/content", headers=hb, json={"text": A_TEXT.replace(MARKER, "bike")})
    assert image.status_code == text.status_code == 202, (image.text, text.text)
    b_ids = {image.json()["id"], text.json()["id"]}
    worker = WorkerProcess(stack, "tagging", tmp_path / "worker.log")
    try:
        for key in (a.key, key_b):
            for job_id in {image.json()["job_id"], text.json()["job_id"], *a.ids["job_id"]}:
                job = c.get(f"/v1/jobs/{job_id}", headers=auth(key)).json()
                if "status" in job:  # the owner's key sees it
                    assert wait_job(c, key, job_id)["status"] == "succeeded"
    finally:
        worker.stop()
    before = snapshot(stack, a.tenant_id)
    for item_id in b_ids:
        item = c.get(f"/v1/content/{item_id}", headers=hb)
        assert item.status_code == 200 and item.json()["tags"], item.text
        assert item.json()["duplicate_of"] is None, "B's upload named A's item as its original"
        assert not leaks(item, a), item.text  # A's vocabulary and manual tags stay A's
        space = "image" if item.json()["kind"] == "image" else "text"
        similar = c.get(f"/v1/content/{item_id}/similar", headers=hb, params={"space": space})
        assert similar.status_code == 200, similar.text
        assert {s["id"] for s in similar.json()["items"]} <= b_ids
        assert not leaks(similar, a), similar.text
    # B deletes its copy: A's item keeps the blob both pointed at.
    original = c.get(f"/v1/content/{a.ids['content_id'][1]}/assets/original", headers=auth(a.key))
    assert c.delete(f"/v1/content/{image.json()['id']}", headers=hb).status_code == 204
    again = c.get(f"/v1/content/{a.ids['content_id'][1]}/assets/original", headers=auth(a.key))
    assert again.status_code == 200 and again.content == original.content == a_photo()
    assert snapshot(stack, a.tenant_id) == before

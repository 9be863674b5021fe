"""Interactions -> SQL -> real Celery training job -> recommender service, via the gateway.

The recommender runs in this process on a loopback port (uvicorn in a thread) and the gateway
points at it, so every request takes the production path: gateway auth, HTTP forwarding with
the tenant header, SQL fold-in, model artefacts written by the worker process.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from services.gateway.interactions import ingest as ingest_events
from services.gateway.main import create_app
from services.gateway.recommender_client import RecommenderClient
from shared.db.models import ContentItem, Embedding, Interaction, Tag
from shared.db.session import session_scope
from shared.schemas.recommendations import DEFAULT_EVENT_WEIGHTS
from tests.conftest import REDIS_SERVER, Stack, WorkerProcess
from tests.helpers import auth, wait_job
from tests.servers import recommender_server

pytestmark = pytest.mark.integration

CLUSTERS = 4
ITEMS_PER_CLUSTER = 10
USERS_PER_CLUSTER = 12
T0 = datetime(2024, 3, 1, tzinfo=UTC)
# Redis databases of their own: workers of other test modules (or of other checkouts running
# tests on the same Redis) would otherwise take our training messages and drop them.
_REDIS_DB = {"sqlite": 12, "postgresql": 13}


@pytest.fixture(scope="module")
def stack(stack: Stack) -> Stack:
    own = dataclasses.replace(stack, redis_url=f"{REDIS_SERVER}/{_REDIS_DB[stack.name]}")
    redis.Redis.from_url(own.redis_url).flushdb()
    return own


@pytest.fixture(scope="module")
def worker(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    log = tmp_path_factory.mktemp("worker") / f"reco-worker-{stack.name}.log"
    proc = WorkerProcess(stack, "training", log)
    yield proc
    proc.stop()


@pytest.fixture
def client(stack: Stack, worker: WorkerProcess) -> Iterator[TestClient]:
    with recommender_server(stack) as reco_url:
        settings = stack.gateway_settings(recommender_url=reco_url)
        with TestClient(create_app(settings)) as c:
            yield c


def planted_events(held_out: str = "c0-8") -> list[dict[str, Any]]:
    """Users like 7 of the 10 items of their taste cluster; u0-0 never saw ``held_out``."""
    rng = np.random.default_rng(0)
    events = []
    n = 0
    for c in range(CLUSTERS):
        for u in range(USERS_PER_CLUSTER):
            user = f"u{c}-{u}"
            picks = rng.choice(ITEMS_PER_CLUSTER, size=7, replace=False)
            if user == "u0-0":
                picks = np.array([0, 1, 2, 3, 4, 5, 6])
            elif c == 0 and u < 9:
                picks = np.union1d(picks[:6], [8])
            for i in picks:
                item = f"c{c}-{i}"
                if user == "u0-0" and item == held_out:
                    continue
                n += 1
                events.append(
                    {
                        "user_id": user,
                        "item_id": item,
                        "event_type": "like" if n % 3 else "view",
                        "timestamp": (T0 + timedelta(minutes=n)).isoformat(),
                        "event_id": f"e{n}",
                    }
                )
    return events


def ingest(client: TestClient, key: str, events: list[dict[str, Any]]) -> httpx.Response:
    return client.post("/v1/interactions", json={"events": events}, headers=auth(key))


def train(client: TestClient, key: str) -> dict[str, Any]:
    r = client.post(
        "/v1/recommender/train",
        json={"budget_s": 5, "candidates": ["ease", "itemknn", "als"]},
        headers=auth(key),
    )
    assert r.status_code == 202, r.text
    job = wait_job(client, key, r.json()["job_id"], timeout=120)
    assert job["status"] == "succeeded", job
    return job


def recs(client: TestClient, key: str, user: str, **params: Any) -> dict[str, Any]:
    r = client.get(f"/v1/users/{user}/recommendations", params=params, headers=auth(key))
    assert r.status_code == 200, r.text
    return r.json()


def ext_ids(body: dict[str, Any]) -> list[str]:
    return [i["external_id"] for i in body["items"]]


def test_ingest_train_recommend_filter_fold_in_rollback(client: TestClient, stack: Stack) -> None:
    tenant, key = stack.new_key()
    events = planted_events()
    r = ingest(client, key, events)
    assert r.status_code == 200, r.text
    assert r.json()["stored"] == len(events)
    assert r.json()["items_created"] == CLUSTERS * ITEMS_PER_CLUSTER

    # Before any model: popular items from SQL, never an error.
    cold = recs(client, key, "someone-new")
    assert cold["model_version"] is None and len(cold["items"]) == 10

    job = train(client, key)
    first_version = job["result"]["version"]
    assert job["result"]["metrics"]["n_events"] == len(events)

    body = recs(client, key, "u0-0", limit=5)
    assert body["model_version"] == first_version
    top = ext_ids(body)
    # The planted structure: the held-out liked item ranks near the top, all from cluster 0.
    assert "c0-8" in top[:3], body
    assert all(x.startswith("c0-") for x in top[:3])
    assert not {f"c0-{i}" for i in range(7)} & set(top)  # seen items are excluded
    first = body["items"][0]
    assert first["source"] == "cf" and first["reason"].startswith("similar to c0-")
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)

    # Exclusions and filters.
    assert "c0-8" not in ext_ids(recs(client, key, "u0-0", exclude="c0-8"))
    seen = ext_ids(recs(client, key, "u0-0", exclude_seen=False, limit=10))
    assert set(seen) & {f"c0-{i}" for i in range(7)}
    with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
        ids = dict(
            s.execute(
                select(ContentItem.external_id, ContentItem.id).where(
                    ContentItem.tenant_id == tenant
                )
            ).all()
        )
        s.execute(
            update(ContentItem)
            .where(ContentItem.id.in_([ids["c0-9"], ids["c2-1"]]))
            .values(meta={"section": "sport"}, title="Match report")
        )
        s.add(Tag(tenant_id=tenant, content_id=ids["c3-3"], name="cats", source="manual"))
        s.commit()
    sport = recs(client, key, "u0-0", metadata="section=sport")
    assert ext_ids(sport) == ["c0-9", "c2-1"]
    assert sport["items"][0]["title"] == "Match report"
    assert ext_ids(recs(client, key, "u0-0", tag="cats")) == ["c3-3"]
    assert recs(client, key, "u0-0", kind="image")["items"] == []
    div = recs(client, key, "u0-0", limit=5, diversity=0.9)
    assert len({x.split("-")[0] for x in ext_ids(div)}) > 1

    # Real time: new events change the answer without retraining; dislikes are excluded.
    later = (T0 + timedelta(days=2)).isoformat()
    fresh = [
        {"user_id": "u0-0", "item_id": f"c1-{i}", "event_type": "purchase", "timestamp": later}
        for i in range(6)
    ] + [{"user_id": "u0-0", "item_id": "c0-8", "event_type": "dislike", "timestamp": later}]
    assert ingest(client, key, fresh).status_code == 200
    after = recs(client, key, "u0-0", limit=5)
    assert after["model_version"] == first_version
    assert "c0-8" not in ext_ids(after)
    assert any(x.startswith("c1-") for x in ext_ids(after)[:3])

    # Session-based cold start, and similar items.
    session = recs(client, key, "visitor-1", seed_items=["c2-0", "c2-1"], limit=3)
    assert all(x.startswith("c2-") for x in ext_ids(session)), session
    assert session["items"][0]["source"] == "session"
    sim = client.get("/v1/items/c3-0/similar", params={"limit": 3}, headers=auth(key))
    assert sim.status_code == 200, sim.text
    assert all(x.startswith("c3-") for x in ext_ids(sim.json()))
    missing = client.get("/v1/items/nope/similar", headers=auth(key))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

    # A second version is served at once; activating the first one rolls back.
    second_version = train(client, key)["result"]["version"]
    assert recs(client, key, "u0-0")["model_version"] == second_version
    models = client.get("/v1/recommender/models", headers=auth(key)).json()
    assert [m["version"] for m in models] == [second_version, first_version]
    assert [m["active"] for m in models] == [True, False]
    assert "ndcg" in models[0]["metrics"]["validation"]
    r = client.post(f"/v1/recommender/models/{first_version}:activate", headers=auth(key))
    assert r.status_code == 200 and r.json()["active"] is True
    assert recs(client, key, "u0-0")["model_version"] == first_version
    r = client.post("/v1/recommender/models/nope:activate", headers=auth(key))
    assert r.status_code == 404


def test_new_item_reaches_users_through_its_content_embedding(
    client: TestClient, stack: Stack
) -> None:
    tenant, key = stack.new_key()
    assert ingest(client, key, planted_events()).status_code == 200
    r = ingest(
        client,
        key,
        [{"user_id": "other", "item_id": "fresh-0", "event_type": "dislike", "event_id": "x"}],
    )
    assert r.status_code == 200
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(CLUSTERS, 16))
    with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
        ids = dict(
            s.execute(
                select(ContentItem.external_id, ContentItem.id).where(
                    ContentItem.tenant_id == tenant
                )
            ).all()
        )
        for ext, cid in ids.items():
            c = 0 if ext == "fresh-0" else int(ext[1])
            vec = (centres[c] + 0.1 * rng.normal(size=16)).astype("<f4")
            s.add(
                Embedding(
                    content_id=cid, space="text", tenant_id=tenant, model="t", dim=16,
                    vector=vec.tobytes(),
                )
            )  # fmt: skip
        s.commit()
    train(client, key)
    body = recs(client, key, "u0-0", limit=8)
    fresh = [i for i in body["items"] if i["external_id"] == "fresh-0"]
    assert fresh and fresh[0]["source"] == "content", body
    sim = client.get(
        "/v1/items/fresh-0/similar", params={"mode": "content", "limit": 5}, headers=auth(key)
    ).json()
    assert all(x.startswith("c0-") for x in ext_ids(sim))


def test_reingestion_is_idempotent_and_rejected_batches_store_nothing(
    client: TestClient, stack: Stack
) -> None:
    tenant, key = stack.new_key()
    events = planted_events()[:50]
    assert ingest(client, key, events).json()["stored"] == 50
    again = ingest(client, key, events).json()
    assert again["stored"] == 0 and again["duplicates"] == 50 and again["items_created"] == 0

    bad_type = [*planted_events()[50:60], {"user_id": "u", "item_id": "i", "event_type": "wink"}]
    r = ingest(client, key, bad_type)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "validation_error"
    assert "events[10]" in r.json()["error"]["message"]
    bad_time = [*planted_events()[60:63], {**planted_events()[0], "timestamp": "yesterday"}]
    r = ingest(client, key, bad_time)
    assert r.status_code == 422 and "events[3].timestamp" in r.json()["error"]["message"]
    too_many = [{"user_id": "u", "item_id": "i", "event_type": "view"}] * 10_001
    assert ingest(client, key, too_many).status_code == 422

    # A tenant-defined type becomes valid once it has a weight.
    r = client.put(
        "/v1/recommender/config", json={"event_weights": {"wink": 2.0}}, headers=auth(key)
    )
    assert r.status_code == 200 and r.json()["event_weights"]["wink"] == 2.0
    assert client.get("/v1/recommender/config", headers=auth(key)).json()["event_weights"]["like"]
    with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
        count = s.scalar(select(func.count()).where(Interaction.tenant_id == tenant))
        items = s.scalar(select(func.count()).where(ContentItem.tenant_id == tenant))
    assert count == 50
    assert items == len({e["item_id"] for e in events})


def test_tenants_are_isolated(client: TestClient, stack: Stack) -> None:
    _, key_a = stack.new_key()
    _, key_b = stack.new_key()
    assert ingest(client, key_a, planted_events()).status_code == 200
    train(client, key_a)
    assert recs(client, key_a, "u0-0")["model_version"] is not None
    b = recs(client, key_b, "u0-0")
    assert b["model_version"] is None and b["items"] == []
    assert client.get("/v1/items/c0-1/similar", headers=auth(key_b)).status_code == 404
    assert client.get("/v1/recommender/models", headers=auth(key_b)).json() == []
    # The same event ids in another tenant are other events.
    r = ingest(client, key_b, planted_events()[:5])
    assert r.json()["stored"] == 5


def test_recommender_down_is_a_503_in_the_error_shape(client: TestClient, stack: Stack) -> None:
    _, key = stack.new_key()
    client.app.state.recommender = RecommenderClient(  # type: ignore[attr-defined]
        "http://127.0.0.1:9", timeout_s=2, secret="unused: nothing listens"
    )
    r = client.get("/v1/users/u/recommendations", headers=auth(key))
    assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable"


def _count(url: str, tenant: str) -> tuple[int, int]:
    with session_scope(url) as s:
        events = s.scalar(select(func.count()).where(Interaction.tenant_id == tenant))
        items = s.scalar(select(func.count()).where(ContentItem.tenant_id == tenant))
    return int(events or 0), int(items or 0)


def _send_twice_at_once(url: str, tenant: str, events: list[dict[str, Any]]) -> list[Any]:
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def send() -> None:
        with session_scope(url) as s:
            barrier.wait()
            results.append(
                ingest_events(
                    s,
                    tenant_id=tenant,
                    raw_events=events,
                    event_weights=DEFAULT_EVENT_WEIGHTS,
                    max_events=10_000,
                )
            )

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_concurrent_retries_of_one_batch_store_it_once(stack: Stack) -> None:
    """A CMS that times out and resends while the first request is still running: both
    requests race on the same event ids and the same new items; the batch counts once."""
    url = stack.gateway_settings().sqlalchemy_url
    events = planted_events()[:300]
    items = len({e["item_id"] for e in events})
    for attempt in range(4):
        tenant, _ = stack.new_key()
        before = 0
        if attempt % 2:
            # Items known already: both requests reach the COPY of the events at once, and
            # on PostgreSQL the loser's COPY fails on the unique key and is redone by
            # INSERT ... ON CONFLICT DO NOTHING. Otherwise they race on creating the items.
            earlier = [{**e, "event_id": f"earlier-{e['event_id']}"} for e in events]
            with session_scope(url) as s:
                ingest_events(
                    s, tenant_id=tenant, raw_events=earlier,
                    event_weights=DEFAULT_EVENT_WEIGHTS, max_events=10_000,
                )  # fmt: skip
            before = len(earlier)
        results = _send_twice_at_once(url, tenant, events)
        assert len(results) == 2, "an ingest failed instead of treating the race as a retry"
        assert sorted(r.stored for r in results) == [0, len(events)]
        assert sum(r.items_created for r in results) == (0 if before else items)
        assert _count(url, tenant) == (before + len(events), items)


def test_bulk_ingest_creates_many_items_and_accepts_our_content_ids(stack: Stack) -> None:
    url = stack.gateway_settings().sqlalchemy_url
    tenant, _ = stack.new_key()
    total = 0
    # Several batches of thousands of new items each: the path that slowed down as the
    # catalogue grew (see bench/bench_reco_latency.py).
    for batch in range(3):
        events = [
            {"user_id": f"u{i % 97}", "item_id": f"b{batch}-{i}", "event_type": "view"}
            for i in range(2500)
        ]
        with session_scope(url) as s:
            res = ingest_events(
                s,
                tenant_id=tenant,
                raw_events=events,
                event_weights=DEFAULT_EVENT_WEIGHTS,
                max_events=10_000,
            )
        total += len(events)
        assert (res.stored, res.items_created) == (2500, 2500)
    assert _count(url, tenant) == (total, total)
    with session_scope(url) as s:
        cid = s.scalar(
            select(ContentItem.id).where(
                ContentItem.tenant_id == tenant, ContentItem.external_id == "b0-7"
            )
        )
        assert cid is not None
        mixed = [
            {"user_id": "z", "item_id": cid, "event_type": "like"},
            {"user_id": "z", "item_id": "b0-7", "event_type": "view", "value": 2},
            {"user_id": "z", "item_id": "brand-new", "event_type": "view"},
        ]
        res = ingest_events(
            s, tenant_id=tenant, raw_events=mixed, event_weights=DEFAULT_EVENT_WEIGHTS,
            max_events=10_000,
        )  # fmt: skip
        assert (res.stored, res.items_created) == (3, 1)
        rows = s.execute(
            select(Interaction.item_id, Interaction.value)
            .where(Interaction.tenant_id == tenant, Interaction.user_id == "z")
            .order_by(Interaction.id)
        ).all()
    assert [r[0] for r in rows[:2]] == [cid, cid]
    assert rows[1][1] == 2.0
    assert _count(url, tenant) == (total + 3, total + 1)

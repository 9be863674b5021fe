"""PostgreSQL restarts under load (issue 16): uploads, events and recommendation reads keep
arriving while the database stops and starts again.

Expected: while it is down every request fails fast with 503 ``database_unavailable`` (never a
500, never a hang); afterwards the gateway, the recommender and the worker recover by themselves
(the pool replaces dropped connections: ``pool_pre_ping``), every request that was answered 2xx
is in the database, and every accepted upload ends tagged once.

The database is a private cluster (tests/pg_server.py): the shared test server must not stop.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.gateway.main import create_app
from shared.db.migrate import upgrade
from shared.db.models import ContentItem, Interaction, JobStatus, Tag
from shared.db.session import session_scope
from tests.conftest import WorkerProcess
from tests.helpers import auth
from tests.integration.test_faults import FAST_RESCUE, FaultStack, final, wait_for
from tests.integration.test_redis_faults import private_models, start_beat, stop_proc
from tests.pg_server import PostgresServer, unavailable_reason
from tests.redis_server import RedisServer
from tests.servers import recommender_server

pytestmark = [pytest.mark.integration]
_WHY_NOT = unavailable_reason()
if _WHY_NOT is not None:
    pytestmark.append(pytest.mark.skip(reason=f"private PostgreSQL cluster: {_WHY_NOT}"))

# Generous: failing fast takes milliseconds; this only tells a hang from an answer.
ANSWER_BOUND_S = 30.0


@dataclass
class Answer:
    kind: str  # upload | events | recs
    status: int
    took: float
    body: Any
    sent: Any
    at: float


@pytest.fixture
def cluster(models_dir: Path, tmp_path: Path) -> Iterator[tuple[PostgresServer, FaultStack]]:
    server = PostgresServer()
    (tmp_path / "redis").mkdir()
    redis_server = RedisServer(tmp_path / "redis")
    try:
        url = server.create_database("atelier")
        upgrade(url)
        yield (
            server,
            FaultStack(
                name="pg-restart",
                db_url=url,
                redis_url=redis_server.url,
                storage_dir=tmp_path / "blobs",
                models_dir=private_models(models_dir, tmp_path / "models"),
                extra={**FAST_RESCUE, "ATELIER_REQUEUE_AFTER_S": "30"},
            ),
        )
    finally:
        redis_server.stop()
        server.close()


class Load:
    """Threads sending uploads, event batches and recommendation reads until stopped."""

    def __init__(self, client: TestClient, key: str):
        self.client, self.key = client, key
        self.answers: list[Answer] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._loop, args=(kind,), daemon=True)
            for kind in ("upload", "upload", "events", "recs")
        ]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=2 * ANSWER_BOUND_S)
            assert not t.is_alive(), "a request hung"

    def _send(self, kind: str) -> tuple[Any, Any]:
        h = auth(self.key)
        tag = uuid.uuid4().hex[:12]
        if kind == "upload":
            ext = f"upload-{tag}"
            body = {"external_id": ext, "text": f"a red bicycle by the river {tag}"}
            return ext, self.client.post("/v1/content", headers=h, json=body)
        if kind == "events":
            sent = [f"evt-{tag}-{i}" for i in range(5)]
            events = [
                {"user_id": f"u{i}", "item_id": f"item-{i}", "event_type": "view", "event_id": e}
                for i, e in enumerate(sent)
            ]
            return sent, self.client.post("/v1/interactions", headers=h, json={"events": events})
        return None, self.client.get("/v1/users/u1/recommendations", headers=h)

    def _loop(self, kind: str) -> None:
        while not self.stop.is_set():
            t0 = time.monotonic()
            sent, r = self._send(kind)
            try:
                body = r.json()
            except ValueError:
                body = r.text
            with self._lock:
                self.answers.append(Answer(kind, r.status_code, time.monotonic() - t0, body, sent,
                                           t0))  # fmt: skip
            time.sleep(0.05)

    def wait_each(self, what: str, *, ok: bool, since: float = 0.0) -> None:
        for kind in ("upload", "events", "recs"):
            wait_for(f"{kind} {what}", lambda k=kind: self.count(k, ok=ok, since=since) >= 3)

    def count(self, kind: str, ok: bool, since: float = 0.0) -> int:
        with self._lock:
            return sum(
                1
                for a in self.answers
                if a.kind == kind and a.at >= since and (a.status < 300) == ok
            )


def test_postgres_restart_under_load_fails_fast_then_everything_recovers(
    cluster: tuple[PostgresServer, FaultStack], tmp_path: Path
) -> None:
    server, stack = cluster
    tenant_id, key = stack.new_key()
    worker = WorkerProcess(stack, "tagging", tmp_path / "worker.log")
    beat = start_beat(stack, tmp_path)
    try:
        with recommender_server(stack) as reco_url:
            settings = stack.gateway_settings(recommender_url=reco_url, rate_limit_key_rps=0)
            app = create_app(settings)
            with (
                TestClient(app, raise_server_exceptions=False) as client,
                Load(client, key) as load,
            ):
                load.wait_each("answered before", ok=True)
                server.stop("fast")
                load.wait_each("refused while down", ok=False, since=time.monotonic())
                ready = client.get("/readyz")
                assert ready.status_code == 503
                assert ready.json()["checks"]["database"].startswith("error"), ready.json()
                server.start()
                load.wait_each("answered after the restart", ok=True, since=time.monotonic())
                assert client.get("/readyz").status_code == 200
            answers = list(load.answers)
        jobs = wait_for("every job to end", lambda: final(stack, tenant_id), timeout=300)
        assert worker.alive(), "the worker died with the database"
    finally:
        stop_proc(beat)
        worker.stop()

    bad = [
        a
        for a in answers
        if a.status >= 300 and (a.status, _code(a.body)) != (503, "database_unavailable")
    ]
    assert not bad, [(a.kind, a.status, a.body) for a in bad[:5]]
    slow = [a for a in answers if a.took > ANSWER_BOUND_S]
    assert not slow, [(a.kind, a.status, a.took) for a in slow[:5]]

    uploaded = {a.body["id"]: a.sent for a in answers if a.kind == "upload" and a.status == 202}
    events = {e for a in answers if a.kind == "events" and a.status == 200 for e in a.sent}
    with session_scope(stack.url()) as s:
        stored = dict(
            s.execute(
                select(ContentItem.id, ContentItem.external_id).where(
                    ContentItem.tenant_id == tenant_id, ContentItem.kind == "text"
                )
            ).all()
        )
        # Every upload answered 202 is there, with what was sent.
        assert {i: stored.get(i) for i in uploaded} == uploaded
        have = set(
            s.scalars(select(Interaction.event_id).where(Interaction.tenant_id == tenant_id))
        )
        assert events <= have, f"{len(events - have)} events answered 200 are missing"
        # Every job ended, done once: the worker and the sweeper recovered without help.
        assert all(j.status == JobStatus.succeeded for j in jobs), [
            (j.id, j.status, j.error) for j in jobs if j.status != JobStatus.succeeded
        ]
        for item_id in stored:
            item = s.get(ContentItem, item_id)
            assert item is not None and item.status == "ready", item_id
            tags = s.execute(select(Tag.name, Tag.source).where(Tag.content_id == item_id)).all()
            assert len(tags) == len(set(tags))


def _code(body: Any) -> str | None:
    return body.get("error", {}).get("code") if isinstance(body, dict) else None

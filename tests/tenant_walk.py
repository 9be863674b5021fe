"""The multi-tenant walk's tenant A: one of every kind of resource, the strings only A's data
holds, and how to tell an answer about A's ids from one about ids that exist nowhere.

Used by tests/integration/test_tenant_isolation.py (the API) and test_console_isolation.py.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.gateway.main import create_app
from shared.db.model_versions import record_version
from shared.db.models import ContentItem, Interaction, Job, ModelVersion, Tag, Tagger, Webhook
from shared.db.session import session_scope
from shared.inference.manifest import Manifest, publish_model_dir, write_manifest
from shared.model_versions import set_active_version, tagger_model_name, tenant_model_name
from tests.conftest import BUNDLED_MODELS, Stack
from tests.helpers import auth, jpeg_bytes
from tests.redis_server import RedisServer
from tests.servers import recommender_server

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


@contextmanager
def walk_client(
    pg_url: str, models_dir: Path, tmp_path: Path
) -> Iterator[tuple[Stack, TestClient]]:
    """A gateway (and a recommender) on the test database, its own Redis and models."""
    (tmp_path / "redis").mkdir()
    redis_server = RedisServer(tmp_path / "redis")  # jobs are published where no worker reads
    models = tmp_path / "models"
    models.mkdir()
    for name in BUNDLED_MODELS:
        if (models_dir / name).is_dir():
            (models / name).symlink_to((models_dir / name).resolve())
    stack = Stack("isolation", pg_url, redis_server.url, tmp_path / "blobs", models)
    try:
        with recommender_server(stack) as reco_url:
            settings = stack.gateway_settings(
                recommender_url=reco_url,
                webhook_allow_private_targets=True,
                rate_limit_key_rps=0,
            )
            with TestClient(create_app(settings)) as c:
                yield stack, c
    finally:
        redis_server.stop()


def tenant_model(stack: Stack, tenant_id: str, name: str, kind: str) -> None:
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


A_TEXT = f"the {MARKER} of tenant A, a red bicycle by the river"


def a_photo() -> bytes:
    """Tenant A's image (the same bytes every time: another tenant may upload them too)."""
    rng = np.random.default_rng(0)
    return jpeg_bytes(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))


def populate(stack: Stack, c: TestClient) -> TenantA:
    tenant_id, key = stack.new_key(("read", "write", "admin"))
    a = TenantA(tenant_id, key)
    h = auth(key)
    text = c.post(
        "/v1/content",
        headers=h,
        json={"external_id": f"a-text-{MARKER}", "text": A_TEXT},
    )
    assert text.status_code == 202, text.text
    image = c.post(
        "/v1/content",
        headers=h,
        files={"file": ("a.jpg", a_photo(), "image/jpeg")},
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
    tenant_model(stack, tenant_id, tagger_model_name(tagger_id), "tenant_tagger")
    generator = tenant_model_name("text_generator", tenant_id)
    tenant_model(stack, tenant_id, generator, "text_generator")
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


def snapshot(stack: Stack, tenant_id: str) -> dict[str, Any]:
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


def leaks(r: Any, a: TenantA, sent: str = "") -> list[str]:
    """A's strings in the answer, but for those the request itself carried."""
    return sorted(s for s in a.secrets() if s in r.text and s not in sent)


def nowhere(name: str) -> str:
    """A value of the same shape as A's that no tenant has."""
    if name in ("name", "user_id", "version"):
        return f"nowhere-{uuid.uuid4().hex[:8]}"
    return str(uuid.uuid4())


def shape(text: str, values: dict[str, str]) -> str:
    """The answer with the ids it echoes taken out (and each segment of a proxied path), and
    the request id."""
    for v in values.values():
        for part in (v, *v.split("/")):
            text = text.replace(part, "<id>") if part else text
    try:
        body = json.loads(text)
    except ValueError:
        return text
    return re.sub(r'"request_id":\s*"[^"]*"', "", json.dumps(body, sort_keys=True))

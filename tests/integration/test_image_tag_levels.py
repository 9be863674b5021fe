"""Image tags through the API: each carries its level, and no parent repeats its only child."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from skimage import data

from services.gateway.main import create_app
from shared.model_versions import active_version
from tests.conftest import Stack, WorkerProcess
from tests.helpers import auth, jpeg_bytes, wait_job
from workers.tagging.concepts import CURATED, MIN_GAIN, plan_tags
from workers.tagging.image import TAXONOMY_FILE

pytestmark = pytest.mark.integration


@pytest.fixture
def client(stack: Stack, worker: WorkerProcess) -> Iterator[TestClient]:
    with TestClient(create_app(stack.gateway_settings())) as c:
        yield c


def _taxonomy(models_dir: Path) -> Path:
    version = active_version(models_dir, "image_tagger")
    assert version, "the image tagger is not built"
    return models_dir / "image_tagger" / version / TAXONOMY_FILE


def _upload(client: TestClient, key: str, image: Any) -> str:
    r = client.post(
        "/v1/content",
        headers=auth(key),
        files={"file": ("photo.jpg", jpeg_bytes(image), "image/jpeg")},
    )
    assert r.status_code == 202, r.text
    assert wait_job(client, key, r.json()["job_id"])["status"] == "succeeded"
    return r.json()["id"]


def test_image_tags_carry_level_and_no_single_child_chain(client: TestClient, stack: Stack) -> None:
    _, key = stack.new_key()
    ids = {name: _upload(client, key, getattr(data, name)()) for name in ("chelsea", "rocket")}

    cat = client.get(f"/v1/content/{ids['chelsea']}", headers=auth(key)).json()["tags"]
    levels = {t["name"]: t["level"] for t in cat}
    assert levels["cat"] == "concept" and levels["tiger cat"] == "class"
    assert set(levels.values()) == {"class", "concept"}
    # The chain above "cat" adds nothing on this photo: feline, carnivore and mammal each
    # score within a point of it, and none of them is a parent editors file photos under.
    assert not {"feline", "carnivore", "mammal"} & levels.keys()

    rocket = client.get(f"/v1/content/{ids['rocket']}", headers=auth(key)).json()["tags"]
    names = {t["name"] for t in rocket}
    # Before: missile and its single-child parent "rocket" both at 0.286; drill rig and rig.
    assert "missile" in names and not {"rocket", "drill rig", "rig", "gear"} & names

    # Property, on the served model's own taxonomy: a parent that is not curated scores at
    # least MIN_GAIN above every tag below it, and no two tags cover the same classes.
    plan = plan_tags(json.loads(_taxonomy(stack.models_dir).read_text())["classes"])
    members = {n: set(m) for n, m in zip(plan.names, plan.members, strict=True)}
    for tags in (cat, rocket):
        scores = {t["name"]: t["score"] for t in tags if t["level"] is not None}
        for a in scores:
            for b in scores:
                if a != b:
                    assert members[a] != members[b], (a, b)
                if members[b] < members[a] and a not in CURATED:
                    assert scores[a] - scores[b] >= MIN_GAIN - 1e-6, (a, b)

    only = client.get(f"/v1/content/{ids['chelsea']}", headers=auth(key), params={"level": "class"})
    assert only.status_code == 200
    assert {t["level"] for t in only.json()["tags"]} == {"class"}
    assert {"tiger cat", "egyptian cat"} <= {t["name"] for t in only.json()["tags"]}
    listed = client.get("/v1/content", headers=auth(key), params={"level": "concept"}).json()
    assert all(t["level"] == "concept" for item in listed["items"] for t in item["tags"])
    bad = client.get(f"/v1/content/{ids['rocket']}", headers=auth(key), params={"level": "x"})
    assert bad.status_code == 422

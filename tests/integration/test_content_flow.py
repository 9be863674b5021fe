"""Upload -> real Redis -> real Celery worker process -> tags in SQL, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data
from sqlalchemy import func, select

from services.gateway.main import create_app
from services.gateway.uploads import read_image
from shared.db.models import Asset, ContentItem, Job
from shared.db.session import session_scope
from shared.imaging import WORKING_ROLE, make_renditions
from shared.jobs import sweep
from shared.queue import create_celery
from shared.storage import open_storage
from tests.conftest import Stack, WorkerProcess
from tests.helpers import auth, jpeg_bytes, png_bytes, tag_names, wait_job

pytestmark = pytest.mark.integration


@pytest.fixture
def client(stack: Stack, worker: WorkerProcess) -> Iterator[TestClient]:
    with TestClient(create_app(stack.gateway_settings())) as c:
        yield c


def test_image_upload_is_tagged_by_a_real_worker(client: TestClient, stack: Stack) -> None:
    _, key = stack.new_key()
    r = client.post(
        "/v1/content",
        headers=auth(key),
        files={"file": ("chelsea.jpg", jpeg_bytes(data.chelsea()), "image/jpeg")},
        data={"external_id": "cms-1", "metadata": json.dumps({"section": "pets"})},
    )
    assert r.status_code == 202, r.text
    body = r.json()
    job = wait_job(client, key, body["job_id"])
    assert job["status"] == "succeeded", job
    item = client.get(f"/v1/content/{body['id']}", headers=auth(key)).json()
    assert item["status"] == "ready"
    assert item["metadata"] == {"section": "pets"}
    assert "cat" in tag_names(item)[:10]
    scores = [t["score"] for t in item["tags"]]
    assert scores == sorted(scores, reverse=True)
    roles = {a["role"]: a for a in item["assets"]}
    assert roles["original"]["width"] == 451 and roles["original"]["height"] == 300
    assert roles["thumbnail"]["mime_type"] == "image/jpeg"
    assert max(roles["thumbnail"]["width"], roles["thumbnail"]["height"]) == 256
    # The tagger's working copy is internal and gone once the image is tagged.
    assert set(roles) == {"original", "thumbnail"}
    assert item["phash"] and len(item["phash"]) == 16
    thumb = client.get(roles["thumbnail"]["url"], headers=auth(key))
    assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"
    assert Image.open(io.BytesIO(thumb.content)).size == (256, 170)

    # The tagger's working copy, made by the gateway from its one decode, was read and dropped:
    # no row, no file, and never downloadable.
    upload = jpeg_bytes(data.chelsea())
    _, decoded = read_image(io.BytesIO(upload), max_pixels=10**8, min_size=256)
    working = make_renditions(
        decoded, working_size=256, thumbnail_size=256, thumbnail_format="jpeg"
    ).files[0]
    assert working.role == WORKING_ROLE
    with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
        roles_in_db = s.scalars(select(Asset.role).where(Asset.content_id == body["id"])).all()
    assert sorted(roles_in_db) == ["original", "thumbnail"]
    assert not (stack.storage_dir / "tmp").exists() or not any(
        (stack.storage_dir / "tmp").iterdir()
    )
    key_of_working = hashlib.sha256(working.data).hexdigest()
    assert not open_storage(f"file://{stack.storage_dir}").exists(key_of_working)
    gone = client.get(f"/v1/content/{body['id']}/assets/{WORKING_ROLE}", headers=auth(key))
    assert gone.status_code == 404 and gone.json()["error"]["message"]

    limited = client.get(
        f"/v1/content/{body['id']}", params={"min_score": 0.5, "limit": 3}, headers=auth(key)
    ).json()
    assert len(limited["tags"]) <= 3
    assert all(t["score"] >= 0.5 for t in limited["tags"])


def test_reencoded_copy_is_marked_as_near_duplicate(client: TestClient, stack: Stack) -> None:
    _, key = stack.new_key()
    first = client.post(
        "/v1/content",
        headers=auth(key),
        files={"file": ("a.jpg", jpeg_bytes(data.astronaut()), "image/jpeg")},
    ).json()
    smaller = Image.fromarray(data.astronaut()).resize((300, 300))
    second = client.post(
        "/v1/content",
        headers=auth(key),
        files={"file": ("b.png", png_bytes(smaller), "image/png")},
    ).json()
    other = client.post(
        "/v1/content",
        headers=auth(key),
        files={"file": ("c.jpg", jpeg_bytes(data.coffee()), "image/jpeg")},
    ).json()
    for b in (first, second, other):
        assert wait_job(client, key, b["job_id"])["status"] == "succeeded"
    dup = client.get(f"/v1/content/{second['id']}", headers=auth(key)).json()
    assert dup["duplicate_of"] == first["id"]
    assert (
        client.get(f"/v1/content/{other['id']}", headers=auth(key)).json()["duplicate_of"] is None
    )


def test_text_content_gets_keyphrases(client: TestClient, stack: Stack) -> None:
    _, key = stack.new_key()
    r = client.post(
        "/v1/content",
        headers=auth(key),
        json={
            "title": "Sourdough bread at home",
            "text": "Feed the sourdough starter, mix flour and water, let the dough rise "
            "overnight and bake the loaf in a hot Dutch oven for a crisp crust.",
        },
    )
    assert r.status_code == 202
    assert wait_job(client, key, r.json()["job_id"])["status"] == "succeeded"
    item = client.get(f"/v1/content/{r.json()['id']}", headers=auth(key)).json()
    assert item["kind"] == "text"
    assert any("sourdough" in name or "bread" in name for name in tag_names(item))


def test_batch_upload_is_one_batched_job(client: TestClient, stack: Stack) -> None:
    _, key = stack.new_key()
    files = [
        ("file", (f"{n}.jpg", jpeg_bytes(getattr(data, n)()), "image/jpeg"))
        for n in ("chelsea", "coffee", "rocket")
    ]
    items = json.dumps([{"external_id": f"b-{i}"} for i in range(3)])
    r = client.post("/v1/content:batch", headers=auth(key), files=files, data={"items": items})
    assert r.status_code == 202, r.text
    body = r.json()
    assert len(body["items"]) == 3 and {i["job_id"] for i in body["items"]} == {body["job_id"]}
    job = wait_job(client, key, body["job_id"])
    assert job["status"] == "succeeded" and job["result"]["items"] == 3
    tags = [tag_names(client.get(f"/v1/content/{i['id']}", headers=auth(key)).json())
            for i in body["items"]]  # fmt: skip
    assert "cat" in tags[0]
    assert {"espresso", "cup", "coffee"} & set(tags[1])


def test_external_id_update_replaces_instead_of_duplicating(
    client: TestClient, stack: Stack
) -> None:
    _, key = stack.new_key()
    first = client.post(
        "/v1/content", headers=auth(key), json={"external_id": "post-9", "title": "Old title"}
    )
    again = client.post(
        "/v1/content", headers=auth(key), json={"external_id": "post-9", "title": "New"}
    )
    assert again.status_code == 409
    assert again.json()["error"]["details"]["id"] == first.json()["id"]
    upd = client.post(
        "/v1/content?on_conflict=update",
        headers=auth(key),
        json={"external_id": "post-9", "title": "New title"},
    )
    assert upd.status_code == 202 and upd.json()["id"] == first.json()["id"]
    assert upd.json()["created"] is False
    wait_job(client, key, upd.json()["job_id"])
    page = client.get("/v1/content", headers=auth(key)).json()
    assert [i["title"] for i in page["items"]] == ["New title"]


def test_list_paginates_and_filters(client: TestClient, stack: Stack) -> None:
    _, key = stack.new_key()
    jobs = [
        client.post("/v1/content", headers=auth(key), json={"title": f"note {i}"}).json()["job_id"]
        for i in range(5)
    ]
    img = client.post(
        "/v1/content",
        headers=auth(key),
        files={"file": ("c.jpg", jpeg_bytes(data.chelsea()), "image/jpeg")},
    ).json()
    for j in [*jobs, img["job_id"]]:
        wait_job(client, key, j)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/content", params=params, headers=auth(key)).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 6 and len(set(seen)) == 6
    cats = client.get("/v1/content", params={"tag": "cat"}, headers=auth(key)).json()
    assert [i["id"] for i in cats["items"]] == [img["id"]]
    texts = client.get("/v1/content", params={"kind": "text"}, headers=auth(key)).json()
    assert len(texts["items"]) == 5


def test_delete_removes_rows_and_unshared_blobs(client: TestClient, stack: Stack) -> None:
    _, key = stack.new_key()
    _, other_key = stack.new_key()
    # Unique bytes: another test may have stored the plain sample photo in this session.
    pixels = data.rocket().copy()
    pixels[:8, :8] = np.random.default_rng().integers(0, 255, (8, 8, 3), dtype=np.uint8)
    photo = jpeg_bytes(pixels)
    mine = client.post(
        "/v1/content", headers=auth(key), files={"file": ("r.jpg", photo, "image/jpeg")}
    ).json()
    theirs = client.post(
        "/v1/content", headers=auth(other_key), files={"file": ("r.jpg", photo, "image/jpeg")}
    ).json()
    wait_job(client, key, mine["job_id"])
    wait_job(client, other_key, theirs["job_id"])
    assets = client.get(f"/v1/content/{mine['id']}", headers=auth(key)).json()["assets"]
    storage = client.app.state.storage  # type: ignore[attr-defined]
    keys = [a["sha256"] for a in assets]
    assert client.delete(f"/v1/content/{mine['id']}", headers=auth(key)).status_code == 204
    assert client.get(f"/v1/content/{mine['id']}", headers=auth(key)).status_code == 404
    # The same bytes are still referenced by the other tenant's item: the blob must stay.
    assert all(storage.exists(k) for k in keys)
    assert client.delete(f"/v1/content/{theirs['id']}", headers=auth(other_key)).status_code == 204
    assert not any(storage.exists(k) for k in keys)


def test_upload_while_redis_is_down_is_kept_and_swept_later(stack: Stack, worker) -> None:  # type: ignore[no-untyped-def]
    _, key = stack.new_key()
    down = stack.gateway_settings(redis_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(down)) as offline:
        r = offline.post("/v1/content", headers=auth(key), json={"title": "written offline"})
        assert r.status_code == 202
        job_id = r.json()["job_id"]
        job = offline.get(f"/v1/jobs/{job_id}", headers=auth(key)).json()
        assert job["status"] == "queued"
    with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
        assert s.get(Job, job_id).published_at is None  # type: ignore[union-attr]
        from datetime import timedelta

        counts = sweep(
            s,
            create_celery(stack.worker_settings()),
            requeue_after=timedelta(minutes=15),
            stale_after={"tagging": timedelta(minutes=10)},
            publish_grace=timedelta(0),
        )
        assert counts["republished"] >= 1
    with TestClient(create_app(stack.gateway_settings())) as online:
        assert wait_job(online, key, job_id)["status"] == "succeeded"


def test_tenants_are_isolated(client: TestClient, stack: Stack) -> None:
    _, key_a = stack.new_key()
    _, key_b = stack.new_key()
    a = client.post("/v1/content", headers=auth(key_a), json={"title": "private"}).json()
    assert client.get(f"/v1/content/{a['id']}", headers=auth(key_b)).status_code == 404
    assert client.get(f"/v1/jobs/{a['job_id']}", headers=auth(key_b)).status_code == 404
    assert client.delete(f"/v1/content/{a['id']}", headers=auth(key_b)).status_code == 404
    assert client.get("/v1/content", headers=auth(key_b)).json()["items"] == []
    with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
        assert s.scalar(select(func.count()).where(ContentItem.id == a["id"])) == 1


def test_health_ready_and_metrics(client: TestClient, stack: Stack) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.json()
    assert ready.json()["checks"]["database"] == "ok"
    _, key = stack.new_key()
    client.post("/v1/content", headers=auth(key), json={"title": "count me"})
    text = client.get("/metrics").text
    assert "atelier_http_request_duration_seconds_bucket" in text
    assert 'atelier_jobs{state="' in text or "atelier_jobs{" in text
    assert 'atelier_queue_depth{queue="tagging"}' in text


def test_readyz_reports_a_dead_dependency(stack: Stack) -> None:
    settings = stack.gateway_settings(redis_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(settings)) as c:
        r = c.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["redis"].startswith("error")
    assert r.json()["error"]["code"] == "not_ready"

"""Generation end to end: train a tenant's own tiny RNN and GAN on a real worker, then generate."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data

from services.gateway.main import create_app
from tests.conftest import Stack, WorkerProcess
from tests.helpers import auth, jpeg_bytes, wait_job

pytestmark = pytest.mark.integration

# Real text: the README of a CMS-like catalogue would do; a few paragraphs of plain prose.
PARAGRAPHS = [
    "The harbour was quiet in the early morning, and the fishing boats rocked gently at "
    "their moorings while gulls circled above the market hall.",
    "Our bakery opens at seven. Fresh sourdough, rye and seeded loaves come out of the oven "
    "every hour, and the croissants are baked with French butter.",
    "The city council approved the new cycling lanes on Tuesday after a long debate about "
    "parking spaces, bus routes and the safety of children on the way to school.",
    "Autumn in the mountains brings cold nights, bright days and the first snow on the peaks; "
    "hikers should carry warm layers, water and a map of the trails.",
    "The museum's new exhibition shows prints, drawings and letters of the painter, with a "
    "room dedicated to her sketchbooks from the years she spent travelling by train.",
]


@pytest.fixture
def client(stack: Stack, worker: WorkerProcess) -> Iterator[TestClient]:
    with TestClient(create_app(stack.gateway_settings())) as c:
        yield c


def _train_text(client: TestClient, key: str, **params: object) -> dict:
    body = {"corpus": "\n\n".join(PARAGRAPHS * 4), "epochs": 1, "hidden": 32, "layers": 1}
    r = client.post("/v1/generators/text:train", headers=auth(key), json={**body, **params})
    assert r.status_code == 202, r.text
    return r.json()


def test_tenant_text_generator_trains_and_generates_deterministically(
    client: TestClient, stack: Stack
) -> None:
    _, key = stack.new_key()
    for i, p in enumerate(PARAGRAPHS):
        client.post("/v1/content", headers=auth(key), json={"title": f"Story {i}", "text": p})
    job = wait_job(client, key, _train_text(client, key)["job_id"], timeout=240)
    assert job["status"] == "succeeded", job
    metrics = job["result"]["metrics"]
    assert metrics["val_bpc"] > 0 and metrics["ngram_val_bpc"] > 0
    # The served RNN + n-gram mixture, its weight chosen on validation: never worse than either.
    assert 0.0 <= metrics["mixture_weight"] <= 1.0
    assert metrics["mixture_val_bpc"] <= min(metrics["val_bpc"], metrics["ngram_val_bpc"]) + 1e-12
    assert job["progress"] == 1.0 and "last_event" in job["result"]

    req = {"prompt": "The ", "max_length": 60, "temperature": 0.9, "seed": 11, "n": 3}
    first = client.post("/v1/generate/text?wait=60", headers=auth(key), json=req)
    assert first.status_code == 200, first.text
    texts = first.json()["result"]["texts"]
    assert len(texts) == 3 and all(0 < len(t.encode()) <= 60 for t in texts)
    assert first.json()["result"]["model"].startswith("text_generator__")
    again = client.post("/v1/generate/text?wait=60", headers=auth(key), json=req)
    assert again.json()["result"]["texts"] == texts

    models = client.get("/v1/models", params={"kind": "text_generator"}, headers=auth(key))
    own = [m for m in models.json()["items"] if m["scope"] == "tenant"]
    assert [(m["name"].split("__")[0], m["active"]) for m in own] == [("text_generator", True)]
    _, other = stack.new_key()
    theirs = client.get("/v1/models", params={"kind": "text_generator"}, headers=auth(other))
    assert not any("__" in m["name"] for m in theirs.json()["items"])


def test_text_generator_learns_the_tags_people_set(client: TestClient, stack: Stack) -> None:
    from workers.training.build.text_generator import load_tagged_fortunes

    _, key = stack.new_key()
    for text, source in load_tagged_fortunes(("startrek", "zippy"), per_file=40):
        r = client.post("/v1/content", headers=auth(key), json={"text": text})
        assert r.status_code in (200, 202), r.text
        item = r.json()["id"]
        r = client.post(f"/v1/content/{item}/tags", headers=auth(key),
                        json={"tags": [{"name": source}]})  # fmt: skip
        assert r.status_code == 200, r.text
    r = client.post("/v1/generators/text:train", headers=auth(key),
                    json={"epochs": 1, "hidden": 32, "layers": 1})  # fmt: skip
    job = wait_job(client, key, r.json()["job_id"], timeout=240)
    assert job["status"] == "succeeded", job
    metrics = job["result"]["metrics"]
    assert metrics["tags"] == ["startrek", "zippy"]
    assert set(metrics["per_tag"]) == {"startrek", "zippy"}

    req = {"max_length": 40, "seed": 2, "n": 2, "tag": "zippy"}
    r = client.post("/v1/generate/text?wait=60", headers=auth(key), json=req)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["tag"] == "zippy" and len(r.json()["result"]["texts"]) == 2

    # An unknown tag is refused before a job exists, with the tags the model knows.
    def job_ids() -> set[str]:
        return {
            j["id"] for j in client.get("/v1/jobs?limit=200", headers=auth(key)).json()["items"]
        }

    jobs_before = job_ids()
    r = client.post("/v1/generate/text?wait=60", headers=auth(key), json={**req, "tag": "murphy"})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "unknown_tag" and error["details"] == {"tags": ["startrek", "zippy"]}
    assert "unknown tag 'murphy'" in error["message"] and "startrek, zippy" in error["message"]
    assert job_ids() == jobs_before

    # Asking for control codes on a corpus without tags fails the job with the reason.
    _, other = stack.new_key()
    r = client.post("/v1/generators/text:train", headers=auth(other),
                    json={"corpus": "\n\n".join(PARAGRAPHS * 4), "epochs": 1, "hidden": 32,
                          "layers": 1, "conditional": True})  # fmt: skip
    job = wait_job(client, other, r.json()["job_id"])
    assert job["status"] == "failed" and "conditional training needs" in job["error"]


def test_generation_requests_are_validated(client: TestClient, stack: Stack) -> None:
    _, key = stack.new_key()
    for bad in (
        {"n": 0},
        {"n": 17},
        {"temperature": -1},
        {"top_p": 0},
        {"max_length": 5000},
        {"stop": [""]},
        {"unknown": 1},
    ):
        r = client.post("/v1/generate/text", headers=auth(key), json=bad)
        assert r.status_code == 422, (bad, r.text)
        assert set(r.json()) == {"error"}
    r = client.post("/v1/generate/images", headers=auth(key), json={"n": 65, "seed": 1})
    assert r.status_code == 422
    r = client.post(
        "/v1/generate/text", headers=auth(key), json={"prompt": "x", "model_version": "nope"}
    )
    assert r.status_code in (404, 503) and r.json()["error"]["code"] == "model_unavailable"
    r = client.post("/v1/generators/text:train", headers=auth(key), json={"epochs": 1})
    job = wait_job(client, key, r.json()["job_id"])
    assert job["status"] == "failed" and "at least" in job["error"]


def test_training_can_be_cancelled(client: TestClient, stack: Stack) -> None:
    _, key = stack.new_key()
    # No epoch cap and a budget far beyond the test's own deadline: however fast the machine,
    # the job is still training when the cancel arrives.
    job_id = _train_text(client, key, epochs=None, budget_s=3600, hidden=64)["job_id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json()
        if job["status"] == "running" and job["progress"] > 0:
            break
        time.sleep(0.3)
    r = client.post(f"/v1/jobs/{job_id}:cancel", headers=auth(key))
    assert r.status_code == 200 and r.json()["cancel_requested"] is True
    job = wait_job(client, key, job_id, timeout=120)
    assert job["status"] == "cancelled", job
    assert "checkpoint" in (job["error"] or "")


def _varied_images(n: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    base = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    out = []
    for i in range(n):
        img = Image.fromarray(base[i % len(base)]).resize((96, 96))
        arr = np.asarray(img).astype(np.int16) + rng.integers(-20, 20, (96, 96, 3))
        out.append(jpeg_bytes(np.clip(arr, 0, 255).astype(np.uint8)))
    return out


def test_tenant_gan_trains_and_generated_images_become_tagged_content(
    client: TestClient, stack: Stack
) -> None:
    _, key = stack.new_key()
    files = [("file", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(_varied_images(20))]
    up = client.post("/v1/content:batch", headers=auth(key), files=files)
    assert wait_job(client, key, up.json()["job_id"])["status"] == "succeeded"

    r = client.post("/v1/generators/images:train", headers=auth(key), json={"steps": 10})
    job = wait_job(client, key, r.json()["job_id"], timeout=300)
    assert job["status"] == "succeeded", job
    m = job["result"]["metrics"]
    assert {"fid", "fid_uniform_noise", "fid_pixel_gaussian"} <= set(m)

    gen = client.post("/v1/generate/images?wait=60", headers=auth(key), json={"n": 4, "seed": 5})
    assert gen.status_code == 200, gen.text
    ids = gen.json()["result"]["content_ids"]
    assert len(ids) == 4
    item = client.get(f"/v1/content/{ids[0]}", headers=auth(key)).json()
    assert item["kind"] == "generated" and item["metadata"]["seed"] == 5
    assert item["metadata"]["model"].startswith("image_generator__")
    assert item["tags"], "generated images are auto-tagged like uploads"
    png = client.get(item["assets"][0]["url"], headers=auth(key))
    assert Image.open(io.BytesIO(png.content)).size == (64, 64)
    # Four photos x five copies: no tag is on 16 images, so the GAN trained without tags and
    # refuses one.
    assert job["result"]["tags"] == []
    tagged = client.post(
        "/v1/generate/images?wait=60", headers=auth(key), json={"n": 1, "seed": 5, "tag": "cat"}
    )
    assert tagged.status_code == 422, tagged.text
    assert tagged.json()["error"]["code"] == "unknown_tag"
    assert "trained without tags" in tagged.json()["error"]["message"]
    walk_tagged = client.post(
        "/v1/generate/images:interpolate",
        headers=auth(key),
        json={"seed_a": 5, "seed_b": 6, "steps": 3, "tag": "cat"},
    )
    assert walk_tagged.status_code == 422 and walk_tagged.json()["error"]["code"] == "unknown_tag"

    walk = client.post(
        "/v1/generate/images:interpolate?wait=60",
        headers=auth(key),
        json={"seed_a": 5, "seed_b": 6, "steps": 3},
    )
    assert walk.status_code == 200 and len(walk.json()["result"]["content_ids"]) == 3
    # The walk starts where seed 5 begins: same pixels as the first generated image.
    first = client.get(
        f"/v1/content/{walk.json()['result']['content_ids'][0]}/assets/original",
        headers=auth(key),
    ).content
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(first))), np.asarray(Image.open(io.BytesIO(png.content)))
    )

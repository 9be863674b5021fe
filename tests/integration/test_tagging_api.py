"""Vocabulary, tag review, similar content and tenant taggers through HTTP and a real worker."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data

from services.gateway.main import create_app
from shared.db.session import session_scope
from tests.conftest import Stack, WorkerProcess
from tests.helpers import auth, jpeg_bytes, png_bytes, tag_names, wait_job
from workers.training.taggers import due_for_retraining

pytestmark = pytest.mark.integration

RECIPES = [
    "Whisk eggs with sugar, fold in flour and bake the sponge cake for thirty minutes.",
    "Simmer tomatoes, garlic and basil into a rich pasta sauce.",
    "Knead the pizza dough, let it rise, then top with mozzarella and bake hot.",
    "Marinate the chicken in yoghurt and spices before grilling it.",
    "Roast the vegetables with olive oil, salt and rosemary until golden.",
    "Stir the risotto rice slowly, adding warm stock one ladle at a time.",
    "Blend ripe bananas, milk and honey for a quick breakfast smoothie.",
    "Fry the onions until soft, add lentils and cumin and cook a thick soup.",
    "Caramelise sugar in a pan and pour it over the custard for a creme brulee.",
    "Season the steak, sear it in a hot skillet and rest it before slicing.",
    "Mix butter, flour and chocolate chips and bake the cookies until crisp.",
    "Steam the dumplings and serve them with soy sauce and chilli oil.",
]
TRAVEL = [
    "We took the night train to Vienna and wandered the old town at dawn.",
    "Our flight landed in Lisbon and we rode the yellow tram up the hill.",
    "Hiking the coastal trail in Cornwall, we slept in a small guesthouse.",
    "The ferry to the Greek islands left at sunrise; the sea was calm.",
    "Backpacking through Vietnam, we crossed the border by bus into Laos.",
    "Book the museum tickets early when you visit Rome in summer.",
    "A road trip along the Pacific coast highway with stops at every beach.",
    "We stayed in a mountain hut in the Alps and hiked to the glacier.",
    "The airport lounge was crowded, so we explored the terminal shops.",
    "Exploring Kyoto's temples by bicycle is the best way to see the city.",
    "Our cruise stopped in three Norwegian fjords in a single week.",
    "Pack light, carry your passport and learn a few words of the language.",
]


@pytest.fixture
def client(stack: Stack, worker: WorkerProcess) -> Iterator[TestClient]:
    # Trained taggers are published into the shared models directory; remove this test's.
    before = set(stack.models_dir.glob("tagger_*"))
    with TestClient(create_app(stack.gateway_settings())) as c:
        yield c
    for path in set(stack.models_dir.glob("tagger_*")) - before:
        shutil.rmtree(path, ignore_errors=True)


def _upload_image(client: TestClient, key: str, image: Any, **fields: str) -> dict[str, Any]:
    r = client.post(
        "/v1/content",
        headers=auth(key),
        params={"on_conflict": "update"},
        files={"file": ("photo.jpg", jpeg_bytes(image), "image/jpeg")},
        data=fields,
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert wait_job(client, key, body["job_id"])["status"] == "succeeded"
    return body


def _upload_texts(client: TestClient, key: str, texts: list[str]) -> list[str]:
    r = client.post(
        "/v1/content:batch", headers=auth(key), json={"items": [{"text": t} for t in texts]}
    )
    assert r.status_code == 202, r.text
    assert wait_job(client, key, r.json()["job_id"])["status"] == "succeeded"
    return [i["id"] for i in r.json()["items"]]


def _tags(client: TestClient, key: str, content_id: str) -> list[dict[str, Any]]:
    r = client.get(f"/v1/content/{content_id}", headers=auth(key))
    assert r.status_code == 200, r.text
    return r.json()["tags"]


def test_vocabulary_tags_texts_and_images(client: TestClient, stack: Stack) -> None:
    _, key = stack.new_key()
    vocabulary = [
        {"name": "Pets", "descriptions": ["cats, dogs and other animals"]},
        {"name": "food", "descriptions": ["meals, drinks, cooking and restaurants"]},
        {"name": "space", "descriptions": ["rockets, astronauts and space travel"]},
    ]
    r = client.put("/v1/vocabulary", headers=auth(key), json=vocabulary)
    assert r.status_code == 200, r.text
    assert [e["name"] for e in r.json()["entries"]] == ["food", "pets", "space"]
    assert client.get("/v1/vocabulary", headers=auth(key)).json() == r.json()

    dup = client.put("/v1/vocabulary", headers=auth(key), json=[{"name": "a"}, {"name": "A "}])
    assert dup.status_code == 422 and "repeat" in dup.json()["error"]["message"]
    many = client.put("/v1/vocabulary", headers=auth(key), json=[{"name": "x"}] * 501)
    assert many.status_code == 422

    photo = _upload_image(client, key, data.chelsea())
    (text,) = _upload_texts(client, key, ["My new kitten sleeps all day and purrs on the sofa."])
    photo_tags = {t["name"]: t for t in _tags(client, key, photo["id"])}
    assert "pets" in photo_tags and "food" not in photo_tags
    assert photo_tags["pets"]["source"].startswith("image_tagger:")
    assert "pets" in tag_names({"tags": _tags(client, key, text)})


def test_manual_accept_reject_survive_retagging(client: TestClient, stack: Stack) -> None:
    _, key = stack.new_key()
    body = _upload_image(client, key, data.chelsea(), external_id="cat-1")
    cid = body["id"]
    assert {"cat", "animal"} <= set(tag_names({"tags": _tags(client, key, cid)}))

    r = client.post(f"/v1/content/{cid}/tags/cat:reject", headers=auth(key))
    assert r.status_code == 200 and "cat" not in tag_names(r.json())
    r = client.post(f"/v1/content/{cid}/tags/animal:accept", headers=auth(key))
    assert {t["name"]: t["origin"] for t in r.json()["tags"]}["animal"] == "accepted"
    r = client.post(
        f"/v1/content/{cid}/tags", headers=auth(key), json={"tags": [{"name": " Office Mascot"}]}
    )
    mascot = {t["name"]: t for t in r.json()["tags"]}["office mascot"]
    assert (mascot["origin"], mascot["source"], mascot["score"]) == ("manual", "manual", 1.0)

    assert client.post(f"/v1/content/{cid}/tags/zebra:accept", headers=auth(key)).status_code == 404
    r = client.delete(f"/v1/content/{cid}/tags/animal", headers=auth(key))
    assert r.status_code == 404 and ":reject" in r.json()["error"]["message"]
    assert (
        client.delete(f"/v1/content/{cid}/tags/office mascot", headers=auth(key)).status_code == 204
    )

    _upload_image(client, key, data.chelsea(), external_id="cat-1")  # re-tag the same item
    tags = {t["name"]: t["origin"] for t in _tags(client, key, cid)}
    assert "cat" not in tags and "office mascot" not in tags
    assert tags["animal"] == "accepted" and "domestic cat" in tags


def test_similar_returns_the_near_duplicate_first(client: TestClient, stack: Stack) -> None:
    _, key = stack.new_key()
    smaller = Image.fromarray(data.astronaut()).resize((300, 300))
    files = [
        ("file", ("a.jpg", jpeg_bytes(data.astronaut()), "image/jpeg")),
        ("file", ("b.jpg", jpeg_bytes(data.coffee()), "image/jpeg")),
        ("file", ("c.png", png_bytes(smaller), "image/png")),
        ("file", ("d.jpg", jpeg_bytes(data.rocket()), "image/jpeg")),
    ]
    r = client.post("/v1/content:batch", headers=auth(key), files=files)
    assert wait_job(client, key, r.json()["job_id"])["status"] == "succeeded"
    ids = [i["id"] for i in r.json()["items"]]
    page = client.get(f"/v1/content/{ids[0]}/similar", headers=auth(key), params={"limit": 2})
    assert page.status_code == 200, page.text
    items = page.json()["items"]
    assert [i["id"] for i in items][:1] == [ids[2]] and len(items) == 2
    assert items[0]["score"] > items[1]["score"]

    no_text = client.get(
        f"/v1/content/{ids[0]}/similar", headers=auth(key), params={"space": "text"}
    )
    assert no_text.status_code == 422 and "no text embedding" in no_text.json()["error"]["message"]
    _, other = stack.new_key()
    assert client.get(f"/v1/content/{ids[0]}/similar", headers=auth(other)).status_code == 404


def test_tenant_tagger_trains_serves_and_rolls_back(client: TestClient, stack: Stack) -> None:
    _, key = stack.new_key()
    _, other = stack.new_key()
    ids = _upload_texts(client, key, RECIPES + TRAVEL)
    recipes, travel = ids[: len(RECIPES)], ids[len(RECIPES) :]
    r = client.post(
        "/v1/taggers",
        headers=auth(key),
        json={"name": "Section", "kind": "text", "labels": ["Recipes", "travel"]},
    )
    assert r.status_code == 201, r.text
    tagger = r.json()
    tid = tagger["id"]
    assert tagger["labels"] == ["recipes", "travel"] and tagger["active_version"] is None

    # Too few examples is refused before a job is queued.
    r = client.post(f"/v1/taggers/{tid}/train", headers=auth(key))
    assert r.status_code == 422 and "too few examples" in r.json()["error"]["message"]

    examples = [{"content_id": c, "label": "recipes"} for c in recipes[:-1]]
    examples += [{"content_id": c, "label": "travel"} for c in travel]
    r = client.post(f"/v1/taggers/{tid}/examples", headers=auth(key), json={"examples": examples})
    assert r.status_code == 200, r.text
    assert r.json()["examples_per_label"] == {"recipes": 11, "travel": 12}
    # A manual tag with the label counts as an example too.
    client.post(
        f"/v1/content/{recipes[-1]}/tags", headers=auth(key), json={"tags": [{"name": "recipes"}]}
    )
    assert client.get(f"/v1/taggers/{tid}", headers=auth(key)).json()["examples_per_label"] == {
        "recipes": 12,
        "travel": 12,
    }

    bad = client.post(
        f"/v1/taggers/{tid}/examples",
        headers=auth(key),
        json={"examples": [{"content_id": recipes[0], "label": "sports"}]},
    )
    assert bad.status_code == 422 and "'sports'" in bad.json()["error"]["message"]
    (foreign,) = _upload_texts(client, other, ["A stranger's note about bread."])
    bad = client.post(
        f"/v1/taggers/{tid}/examples",
        headers=auth(key),
        json={"examples": [{"content_id": foreign, "label": "recipes"}]},
    )
    assert bad.status_code == 422 and foreign in bad.json()["error"]["message"]

    # Another tenant can neither see nor train it.
    assert client.get(f"/v1/taggers/{tid}", headers=auth(other)).status_code == 404
    assert client.post(f"/v1/taggers/{tid}/train", headers=auth(other)).status_code == 404
    assert client.get("/v1/taggers", headers=auth(other)).json()["items"] == []

    r = client.post(f"/v1/taggers/{tid}/train", headers=auth(key))
    assert r.status_code == 202, r.text
    job = wait_job(client, key, r.json()["job_id"], timeout=120)
    assert job["status"] == "succeeded", job
    metrics = job["result"]["metrics"]
    assert job["result"]["version"] == "1"
    assert metrics["accuracy"] >= 0.8 and metrics["macro_f1"] >= 0.8
    assert metrics["per_label"]["recipes"]["positives"] == 12
    assert metrics["per_label"]["travel"]["negatives"] == 12

    # The running worker picks the new model up without a restart.
    (new,) = _upload_texts(client, key, ["Slow-cook the lamb stew with carrots, thyme and wine."])
    by_source = {t["source"]: t["name"] for t in _tags(client, key, new)}
    assert by_source.get(f"tagger_{tid}:1") == "recipes"

    r = client.post(f"/v1/taggers/{tid}/train", headers=auth(key))
    assert wait_job(client, key, r.json()["job_id"], timeout=120)["result"]["version"] == "2"
    models = client.get("/v1/models", headers=auth(key), params={"kind": "tenant_tagger"}).json()
    mine = [(m["version"], m["active"]) for m in models["items"] if m["name"] == f"tagger_{tid}"]
    assert mine == [("1", False), ("2", True)]
    assert all(m["scope"] == "tenant" for m in models["items"])
    assert not [
        m
        for m in client.get("/v1/models", headers=auth(other)).json()["items"]
        if m["name"] == f"tagger_{tid}"
    ]
    bundled = client.get("/v1/models", headers=auth(key), params={"kind": "image_tagger"}).json()
    assert any(m["active"] and m["scope"] == "bundled" for m in bundled["items"])

    url = f"/v1/models/tagger_{tid}/versions/1:activate"
    assert client.post(url, headers=auth(other)).status_code == 404
    r = client.post(url, headers=auth(key))
    assert r.status_code == 200 and r.json()["active"] is True
    assert client.get(f"/v1/taggers/{tid}", headers=auth(key)).json()["active_version"] == "1"
    image_model = bundled["items"][0]
    r = client.post(
        f"/v1/models/{image_model['name']}/versions/{image_model['version']}:activate",
        headers=auth(key),
    )
    assert r.status_code == 403

    time.sleep(2.2)  # workers re-read the ACTIVE pointer every 2 s
    (again,) = _upload_texts(client, key, ["Bake the bread with flour, yeast and water."])
    sources = {t["source"] for t in _tags(client, key, again)}
    assert f"tagger_{tid}:1" in sources and f"tagger_{tid}:2" not in sources

    # The schedule retrains only taggers with corrections newer than their last training.
    def due() -> set[str]:
        with session_scope(stack.gateway_settings().sqlalchemy_url) as s:
            return {t.id for t in due_for_retraining(s)}

    assert tid not in due()
    client.post(f"/v1/content/{again}/tags/recipes:reject", headers=auth(key))
    assert tid in due()


def test_single_facet_tags_every_text_with_exactly_one_entry(
    client: TestClient, stack: Stack
) -> None:
    _, key = stack.new_key()
    body = {
        "facets": [{"name": "Section", "mode": "single"}],
        "entries": [
            {"name": "cooking", "facet": "section", "descriptions": ["recipes and baking"]},
            {"name": "travel", "facet": "section", "descriptions": ["trips, flights, hotels"]},
            # No facet: independent, at its own threshold, exactly as before facets.
            {"name": "finance", "descriptions": ["banks, shares and interest rates"]},
            {"name": "kitchen", "descriptions": ["ovens, pans and cooking"], "threshold": 0.99},
        ],
    }
    r = client.put("/v1/vocabulary", headers=auth(key), json=body)
    assert r.status_code == 200, r.text
    assert r.json()["facets"] == [
        {"name": "section", "mode": "single", "allow_none": False, "none_below": None}
    ]
    entries = {e["name"]: e for e in r.json()["entries"]}
    assert entries["cooking"]["facet"] == "section" and entries["finance"]["facet"] is None
    assert entries["kitchen"]["threshold"] == 0.99
    bad = client.put(
        "/v1/vocabulary", headers=auth(key), json={"entries": [{"name": "a", "facet": "nope"}]}
    )
    assert bad.status_code == 422 and "nope" in bad.json()["error"]["message"]

    texts = [*RECIPES[:4], *TRAVEL[:4], "Shares fell after the bank raised interest rates.", "ok"]
    ids = _upload_texts(client, key, texts)
    for cid, text in zip(ids, texts, strict=True):
        tags = {t["name"]: t for t in _tags(client, key, cid)}
        section = [n for n in ("cooking", "travel") if n in tags]
        assert len(section) == 1, (text, tags)  # even "ok" and the finance text get one
        assert 0.0 < tags[section[0]]["score"] <= 1.0
        assert "kitchen" not in tags  # its own 0.99 threshold
    for cid in ids[:4]:
        assert "cooking" in tag_names({"tags": _tags(client, key, cid)})
    for cid in ids[4:8]:
        assert "travel" in tag_names({"tags": _tags(client, key, cid)})
    assert "finance" in tag_names({"tags": _tags(client, key, ids[8])})
    assert "finance" not in tag_names({"tags": _tags(client, key, ids[0])})

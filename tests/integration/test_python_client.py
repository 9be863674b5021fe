"""The Python client and the `atelier import|train|models` commands against the running suite.

The gateway and the recommender are served by uvicorn on loopback ports in this process and a
real Celery worker process does the jobs, so every call takes the production path: HTTP, auth,
real tagging and training. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from atelier_client import AsyncAtelier, Atelier, NotFound, Unauthorized
from PIL import Image
from skimage import data
from typer.testing import CliRunner

from services.gateway.main import create_app
from suite.cli import app as cli
from tests.conftest import Stack, WorkerProcess
from tests.servers import recommender_server, serve

pytestmark = pytest.mark.integration

PHOTOS = {
    "pets/chelsea.jpg": data.chelsea,
    "people/astronaut.jpg": data.astronaut,
    "kitchen/coffee.jpg": data.coffee,
    "space/rocket.jpg": data.rocket,
}


@pytest.fixture
def base_url(stack: Stack, worker: WorkerProcess) -> Iterator[str]:
    with recommender_server(stack) as reco_url:
        gateway = create_app(stack.gateway_settings(recommender_url=reco_url))
        with serve(gateway, lifespan="on") as url:
            yield url


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for rel, load in PHOTOS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(load()).convert("RGB").save(root / rel, "JPEG", quality=90)
    (root / "notes.csv").write_text("not an image, not uploaded\n")
    return root


def events_csv(path: Path) -> Path:
    """Four taste clusters of eight items, twelve users each liking six of their cluster."""
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["user_id", "item_id", "event_type", "timestamp"])
        n = 0
        for c in range(4):
            for u in range(12):
                for i in range(8):
                    if (i + u) % 8 < 6:
                        n += 1
                        out.writerow([f"u{c}-{u}", f"c{c}-{i}", "like", 1_714_000_000 + n * 60])
    return path


def test_client_tags_a_folder_reviews_tags_loads_events_and_recommends(
    base_url: str, stack: Stack, photos: Path, tmp_path: Path
) -> None:
    _, key = stack.new_key()
    with Atelier(base_url, key) as client:
        assert client.health() == {"status": "ok"}
        results = client.content.upload_folder(photos, concurrency=2)
        assert [r.path for r in results] == sorted(PHOTOS)
        assert {r.status for r in results} == {"created"}, results
        assert [r.external_id for r in results] == sorted(PHOTOS)

        # Again: the external_ids are there (409 -> "exists"), or not even sent.
        again = client.content.upload_folder(photos, concurrency=2)
        assert {r.status for r in again} == {"exists"}
        assert [r.id for r in again] == [r.id for r in results]
        listed = client.content.upload_folder(photos, skip_existing=True)
        assert {r.status for r in listed} == {"skipped"}

        for r in results:
            assert r.job_id is not None
            job = client.jobs.wait(r.job_id, timeout=300)
            assert job.succeeded, job
        page = client.content.list(limit=3)
        assert len(page["items"]) == 3 and page["next_cursor"]
        every = list(client.content.iter(page_size=3))
        assert sorted(c["external_id"] or "" for c in every) == sorted(PHOTOS)
        assert all(c["status"] == "ready" for c in every)

        cat_id = next(r.id for r in results if r.path == "pets/chelsea.jpg")
        assert cat_id is not None
        item = client.content.get(cat_id)
        first, second = item["tags"][0]["name"], item["tags"][1]["name"]
        accepted = client.tags.accept(cat_id, first)
        assert next(t for t in accepted["tags"] if t["name"] == first)["origin"] == "accepted"
        rejected = client.tags.reject(cat_id, second)
        assert second not in [t["name"] for t in rejected["tags"]]
        assert client.content.asset(cat_id, "thumbnail")[:3] == b"\xff\xd8\xff"

        with pytest.raises(NotFound) as missing:
            client.content.get("no-such-item")
        assert (missing.value.status, missing.value.code) == (404, "not_found")

        path = events_csv(tmp_path / "events.csv")
        rows = sum(1 for _ in path.open()) - 1
        batches: list[int] = []
        summary = client.interactions.import_csv(
            path, batch_size=100, on_batch=lambda s: batches.append(s.rows_done)
        )
        assert (summary.stored, summary.rows_done, summary.items_created) == (rows, rows, 32)
        assert batches[-1] == rows and len(batches) == -(-rows // 100)
        # Rows without an event_id get one derived from their content: a re-run stores nothing.
        assert client.interactions.import_csv(path).duplicates == rows

        job = client.recommender.train(budget_s=5, candidates=["ease", "itemknn"])
        job = job.wait(timeout=300)
        assert job.succeeded, job
        version = job.result["version"] if job.result else None
        recs = client.recommender.for_user("u0-0", limit=5)
        assert recs["model_version"] == version and recs["items"]
        assert all(i["external_id"].startswith("c0-") for i in recs["items"][:2]), recs
        assert [m["version"] for m in client.recommender.models() if m["active"]] == [version]

    with Atelier(base_url, "atl_wrong") as bad, pytest.raises(Unauthorized):
        bad.content.list()


def test_cli_imports_resume_and_train(
    base_url: str, stack: Stack, photos: Path, tmp_path: Path
) -> None:
    _, key = stack.new_key()
    env = {"ATELIER_URL": base_url, "ATELIER_API_KEY": key}
    runner = CliRunner()

    def run(*args: str) -> Any:
        res = runner.invoke(cli, [*args, "--json"], env=env)
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    first = run("import", "content", str(photos), "--prefix", "cms/", "--wait")
    assert first["counts"] == {"created": len(PHOTOS)}
    assert all(j["status"] == "succeeded" for j in first["jobs"])
    assert first["results"][0]["external_id"] == "cms/" + sorted(PHOTOS)[0]
    assert run("import", "content", str(photos), "--prefix", "cms/")["counts"] == {
        "skipped": len(PHOTOS)
    }

    path = events_csv(tmp_path / "events.csv")
    rows = sum(1 for _ in path.open()) - 1
    done = run("import", "events", str(path), "--batch-size", "50")
    assert (done["stored"], done["rows_done"], done["resumed_at"]) == (rows, rows, 0)
    state = json.loads((tmp_path / "events.csv.atelier-state.json").read_text())
    assert state["rows_done"] == rows
    # A re-run resumes after the last batch: nothing left to send.
    assert run("import", "events", str(path))["sent"] == 0
    # An interrupted import (state after the first batch) sends only the rest.
    state["rows_done"] = 50
    (tmp_path / "events.csv.atelier-state.json").write_text(json.dumps(state))
    resumed = run("import", "events", str(path), "--batch-size", "50")
    assert (resumed["resumed_at"], resumed["sent"], resumed["duplicates"]) == (
        50, rows - 50, rows - 50,
    )  # fmt: skip

    jobs = run("train", "recommender", "--budget-s", "5", "--candidate", "ease")
    assert jobs[0]["status"] == "succeeded", jobs
    version = jobs[0]["result"]["version"]
    models = run("models", "list")
    assert {"name": "recommender", "version": version, "active": True}.items() <= next(
        m for m in models if m["name"] == "recommender"
    ).items()
    assert run("models", "activate", "recommender", version)["version"] == version

    res = runner.invoke(cli, ["status"], env=stack.env())
    assert res.exit_code == 0 and "models in" in res.output
    # The operator's view: the worker this test runs answers, the jobs above are counted.
    res = runner.invoke(cli, ["status", "--json"], env=stack.env())
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["workers"]["answering"], report["workers"]
    assert report["jobs"].get("succeeded", 0) >= len(jobs)
    assert set(report["queues"]["lengths"]) >= {"tagging", "generation", "training", "builds"}


def test_async_client_smoke(base_url: str, stack: Stack, photos: Path) -> None:
    _, key = stack.new_key()

    async def scenario() -> None:
        async with AsyncAtelier(base_url, key) as client:
            results = await client.content.upload_folder(photos / "pets", concurrency=2)
            assert [r.status for r in results] == ["created"]
            job = await client.jobs.wait(results[0].job_id or "", timeout=300)
            assert job.succeeded, job
            items = [c async for c in client.content.iter(page_size=1)]
            assert [c["external_id"] for c in items] == ["chelsea.jpg"]
            text = await client.content.upload(text="Sourdough at home", external_id="bread")
            assert (await (await client.jobs.get(text["job_id"])).wait(timeout=300)).succeeded
            with pytest.raises(NotFound):
                await client.jobs.get("no-such-job")

    asyncio.run(scenario())

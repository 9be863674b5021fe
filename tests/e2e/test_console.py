"""The web console in headless Chromium, against the suite started as `make run` starts it.

Debian's chromium driven by Playwright (never `playwright install`: there is no internet). The
flow of issue 18: sign in with a key, upload a photo, watch its tags appear, reject one, open a
user's recommendations, generate an image; then keyboard use, phone width and bad input.
Screenshots go to test-artifacts/console/.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from skimage import data

from tests.conftest import ROOT
from tests.e2e.test_suite import Suite, _env
from tests.helpers import jpeg_bytes

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ARTIFACTS = ROOT / "test-artifacts" / "console"
PAGES = ("content", "jobs", "models", "users?user_id=user-1", "similar", "playground", "evaluation")

if not CHROMIUM.exists():  # `make install` installs it; say so rather than fail obscurely
    pytest.skip("Debian's chromium is not installed (make install)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    var = tmp_path_factory.mktemp("console-suite")
    running = Suite(var, _env(var))
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _new_key(suite: Suite) -> str:
    name = f"console-{time.monotonic_ns()}"
    suite.cli("tenants", "create", name)
    return suite.cli("keys", "create", "--tenant", name, "--scopes", "read,write").split()[-1]


def _api(suite: Suite, key: str) -> httpx.Client:
    return httpx.Client(base_url=suite.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _wait_job(api: httpx.Client, job_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def _sign_in(page: Any, suite: Suite, key: str) -> None:
    page.goto(f"{suite.url}/console/content")
    page.wait_for_url("**/console/login**")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/content")


def _shot(page: Any, name: str) -> None:
    # A full-page picture: lazy images below the fold are loaded first.
    page.evaluate("document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading='eager')")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _varied_images(n: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    base = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    out = []
    for i in range(n):
        arr = np.asarray(Image.fromarray(base[i % len(base)]).resize((96, 96))).astype(np.int16)
        arr = arr + rng.integers(-20, 20, arr.shape)
        out.append(jpeg_bytes(np.clip(arr, 0, 255).astype(np.uint8)))
    return out


def _interactions(photo_id: str) -> list[dict[str, str]]:
    """Three groups of readers, each reading within its own articles; user-1 also liked the
    photo uploaded through the console."""
    events = []
    for u in range(30):
        group = u % 3
        for day, j in enumerate((u + d) % 8 for d in range(6)):
            events.append(
                {
                    "user_id": f"user-{u}",
                    "item_id": f"article-{group}-{j}",
                    "event_type": "view",
                    "timestamp": f"2026-11-{day + 1:02d}T10:00:00Z",
                }
            )
    events.append(
        {"user_id": "user-1", "item_id": photo_id, "event_type": "like",
         "timestamp": "2026-11-20T10:00:00Z"}
    )  # fmt: skip
    return events


def test_sign_in_upload_review_recommend_and_generate(suite: Suite, browser: Any) -> None:
    key = _new_key(suite)
    api = _api(suite, key)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    _sign_in(page, suite, key)
    # The GAN takes a minute or two: started now, it trains while the photo is tagged.
    batch = api.post(
        "/v1/content:batch",
        files=[("file", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(_varied_images(20))],
    )
    assert batch.status_code == 202, batch.text
    assert _wait_job(api, batch.json()["job_id"])["status"] == "succeeded"
    gan = api.post("/v1/generators/images:train", json={"steps": 10})
    assert gan.status_code == 202, gan.text

    # Upload a photo through the file input of the drop zone; its card shows up, then its tags.
    photo = ARTIFACTS / "chelsea.jpg"
    photo.write_bytes(jpeg_bytes(data.chelsea()))
    page.reload()
    page.set_input_files("#upload-files", str(photo))
    page.wait_for_selector(".upload-list progress", timeout=10_000)
    card = page.locator(".card", has_text="chelsea").first
    card.locator(".tag").first.wait_for(timeout=120_000)
    assert card.get_attribute("data-status") == "ready"
    content_id = card.get_attribute("data-content-id")
    names = [t.get_attribute("data-tag") for t in card.locator(".tag").all()]
    assert "cat" in names or "domestic cat" in names, names
    assert page.locator(".upload-list .upload-state").first.inner_text() == "tagged"
    _shot(page, "content")

    # Reject a tag in place: it leaves the card, and the API no longer lists it.
    rejected = names[0]
    card.get_by_role("button", name=f"Reject tag {rejected}").click()
    card = page.locator(f"#card-{content_id}")
    card.locator(f'.tag[data-tag="{rejected}"]').wait_for(state="detached", timeout=10_000)
    item = api.get(f"/v1/content/{content_id}").json()
    assert rejected not in [t["name"] for t in item["tags"]]
    assert item["tags"], "only the rejected tag went"
    tagged = api.get("/v1/content", params={"tag": rejected}).json()["items"]
    assert content_id not in [i["id"] for i in tagged]

    # A user's recommendations, with their reasons, beside that user's history.
    r = api.post("/v1/interactions", json={"events": _interactions(content_id)})
    assert r.status_code == 200, r.text
    train = api.post("/v1/recommender/train", json={"budget_s": 5})
    assert _wait_job(api, train.json()["job_id"])["status"] == "succeeded"
    page.goto(f"{suite.url}/console/users")
    page.get_by_label("User id").fill("user-1")
    page.get_by_role("button", name="Show").click()
    page.wait_for_selector("#recs li .reason")
    reasons = page.locator("#recs .reason").all_inner_texts()
    assert reasons and all(reasons), reasons
    history = page.locator("#history li").all_inner_texts()
    assert any("chelsea" in h and "like" in h for h in history), history
    _shot(page, "users")

    # The job monitor lists the jobs above; models and evaluation show the recommender.
    page.goto(f"{suite.url}/console/jobs")
    assert page.locator("#job-rows tr", has_text="train_recommender").count() >= 1
    page.goto(f"{suite.url}/console/models")
    assert page.locator("caption", has_text="Candidates compared").count() >= 1
    page.goto(f"{suite.url}/console/evaluation")
    assert page.locator("svg.chart").count() >= 2
    _shot(page, "evaluation")

    # Generate an image in the playground once the tenant's GAN is trained.
    assert _wait_job(api, gan.json()["job_id"], timeout=400)["status"] == "succeeded"
    page.goto(f"{suite.url}/console/playground")
    page.get_by_label("Seed").nth(1).fill("5")
    page.get_by_role("button", name="Generate images").click()
    page.wait_for_selector("#image-out img", timeout=120_000)
    page.wait_for_function(
        "Array.from(document.querySelectorAll('#image-out img'))"
        ".every(i => i.complete && i.naturalWidth === 64)",
        timeout=30_000,
    )
    assert page.locator("#image-out img").count() == 4
    page.get_by_role("button", name="Walk").click()
    page.wait_for_selector("#walk-out img", timeout=120_000)
    assert page.locator("#walk-out img").count() == 8
    _shot(page, "playground")
    assert not errors, errors
    context.close()


def test_playground_says_when_no_image_generator_is_ready(suite: Suite, browser: Any) -> None:
    # --no-build-models: no bundled generator and no tenant one, so the API answers 503.
    context = browser.new_context()
    page = context.new_page()
    _sign_in(page, suite, _new_key(suite))
    page.goto(f"{suite.url}/console/playground")
    page.get_by_role("button", name="Generate images").click()
    output = page.locator("#image-out.error")
    output.wait_for(timeout=30_000)
    assert "image_generator" in output.inner_text()
    context.close()


def test_keyboard_and_labels(suite: Suite, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{suite.url}/console/login")
    # The key field is labelled, focused on arrival, and the form works from the keyboard.
    assert page.evaluate("document.activeElement.id") == "api_key"
    page.keyboard.type(_new_key(suite))
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Sign in"
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/content")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Skip to content"
    for path in PAGES:
        page.goto(f"{suite.url}/console/{path}")
        unlabelled = page.evaluate(
            """Array.from(document.querySelectorAll(
                 'input:not([type=hidden]), select, textarea, button'))
               .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                 && !el.textContent.trim()).map(el => el.outerHTML)"""
        )
        assert not unlabelled, (path, unlabelled)
    context.close()


def test_every_page_fits_a_phone(suite: Suite, browser: Any) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    _sign_in(page, suite, _new_key(suite))
    for path in PAGES:
        page.goto(f"{suite.url}/console/{path}")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (path, width)
    page.goto(f"{suite.url}/console/content")
    _shot(page, "phone-content")
    context.close()


def test_bad_input_gets_4xx(suite: Suite) -> None:
    key = _new_key(suite)
    anonymous = httpx.get(f"{suite.url}/console/jobs")
    assert anonymous.status_code == 303 and "/console/login" in anonymous.headers["location"]
    wrong = httpx.post(f"{suite.url}/console/login", data={"api_key": "atl_nope"})
    assert wrong.status_code == 401 and "not valid" in wrong.text
    # `next` never leaves the console (no open redirect).
    ok = httpx.post(
        f"{suite.url}/console/login", data={"api_key": key, "next": "https://elsewhere.example/"}
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/console/content"
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    with httpx.Client(base_url=suite.url, cookies=ok.cookies, timeout=30) as c:
        for path in (
            "/console/content?kind=poster",
            "/console/content?cursor=@@@",
            "/console/jobs?status=done",
            "/console/users?user_id=u&limit=0",
            "/console/similar?mode=psychic&item_id=x",
            "/console/content/not..an..id",
            "/console/content/00000000-0000-0000-0000-000000000000",
            "/console/api/no-such-route",
            "/console/api/content/%2e%2e/%2e%2e/metrics",
        ):
            r = c.get(path)
            assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:300])
        # Changing data through the proxy needs the script header and this origin.
        assert c.post("/console/api/recommender/train", json={}).status_code == 403
        cross = c.post(
            "/console/api/recommender/train",
            json={},
            headers={"X-Atelier-Console": "1", "Origin": "https://evil.example"},
        )
        assert cross.status_code == 403
        big = c.post(
            "/console/api/content",
            files={"file": ("x.jpg", b"not an image", "image/jpeg")},
            headers={"X-Atelier-Console": "1"},
        )
        assert 400 <= big.status_code < 500, big.text

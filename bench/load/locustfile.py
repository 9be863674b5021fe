"""The load of bench/bench_load.py: uploads, interaction batches, recommendations, reads.

Run by bench_load (locust --headless, one process); settings come from the environment:

  ATELIER_LOAD_KEY     the tenant's API key (read, write)
  ATELIER_LOAD_RATE    requests per second, all users together (constant throughput)
  ATELIER_LOAD_USERS   how many locust users share that rate (the -u given to locust)
  ATELIER_LOAD_LEDGER  JSON-lines file: every request (route, status, ms) and every accepted write
  ATELIER_LOAD_SEED    seed of the random choices and of the images
  ATELIER_LOAD_CATALOGUE  how many bare items (`article-<n>`) and users (`user-<n>`) bench_load
                          seeded with events before the load

Each user picks a task by a fixed weight (MIX); the ledger is what bench_load checks against the
database once the queues are drained. Interaction batches carry event ids and are retried with the
same ids, so a retry after a lost answer never stores an event twice; an upload retried with the
same external_id whose first attempt was stored answers 409 with that item's id.
"""

from __future__ import annotations

import io
import json
import os
import random
import threading
import time
import uuid
import zlib
from typing import Any

import numpy as np
from locust import HttpUser, constant_throughput, events, task
from PIL import Image, ImageEnhance

# bench_load runs locust from the repository root, which `python -m` puts on sys.path.
from bench.load.mix import EVENTS_PER_BATCH, MIX

KEY = os.environ.get("ATELIER_LOAD_KEY", "")
RATE = float(os.environ.get("ATELIER_LOAD_RATE", "5"))
USERS = int(os.environ.get("ATELIER_LOAD_USERS", "10"))
LEDGER = os.environ.get("ATELIER_LOAD_LEDGER", "load-ledger.jsonl")
SEED = int(os.environ.get("ATELIER_LOAD_SEED", "0"))
CATALOGUE = int(os.environ.get("ATELIER_LOAD_CATALOGUE", "300"))

# Attempts of one write (the same body each time) while the answer is 5xx, 429 or none at all.
ATTEMPTS = 3
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field",
          "retina", "colorwheel", "camera", "coins", "moon", "clock", "brick", "grass")  # fmt: skip
WORDS = ("garden", "spring", "river", "bread", "harbour", "market", "winter", "concert", "museum",
         "recipe", "bicycle", "mountain", "festival", "library", "coffee", "island", "forest",
         "election", "season", "theatre", "painting", "railway", "village", "ocean", "kitchen",
         "football", "harvest", "lantern", "orchard", "castle", "bridge", "storm",
         "meadow")  # fmt: skip


class Ledger:
    """Appends one JSON line per record; gevent runs one greenlet at a time, the lock is for
    locust's own threads."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed at test stop
        self._lock = threading.Lock()

    def write(self, **record: Any) -> None:
        with self._lock:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()


ledger = Ledger(LEDGER)
rng = random.Random(SEED)
# What this process has had accepted, shared by its users: reads and events refer to them.
uploaded: list[tuple[str, str]] = []  # (content id, external_id)
users_with_events: list[str] = [f"user-{n}" for n in range(CATALOGUE * 2 // 3)]
_photos: list[Image.Image] = []


def _photo(n: int) -> Image.Image:
    if not _photos:
        from skimage import data

        _photos.extend(
            Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB") for name in PHOTOS
        )
    return _photos[n % len(_photos)]


def image_bytes(n: int) -> bytes:
    """The n-th upload: a different crop, size, flip, contrast and quality of one of 14 photos,
    so that pHash near-duplicate detection sees distinct images."""
    r = random.Random(SEED * 1_000_003 + n)
    im = _photo(n)
    side = r.uniform(0.45, 0.9)
    w, h = int(im.width * side), int(im.height * side)
    x, y = r.randint(0, im.width - w), r.randint(0, im.height - h)
    im = im.crop((x, y, x + w, y + h))
    if r.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    scale = r.randint(160, 400) / max(im.size)
    im = im.resize((max(1, int(im.width * scale)), max(1, int(im.height * scale))))
    im = ImageEnhance.Contrast(im).enhance(r.uniform(0.7, 1.3))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=r.randint(75, 92))
    return buf.getvalue()


def article(n: int) -> str:
    r = random.Random(SEED * 7_919 + n)
    sentences = [" ".join(r.choice(WORDS) for _ in range(r.randint(6, 14))) for _ in range(4)]
    return ". ".join(s.capitalize() for s in sentences) + "."


@events.request.add_listener
def _record_request(
    request_type: str,
    name: str,
    response_time: float,
    response: Any = None,
    exception: BaseException | None = None,
    **_kw: Any,
) -> None:
    status = getattr(response, "status_code", 0) or 0
    ledger.write(
        t="req", route=f"{request_type} {name}", status=status, ms=round(response_time, 2),
        at=round(time.time(), 3), error=type(exception).__name__ if exception else None,
    )  # fmt: skip


@events.test_stop.add_listener
def _close(**_kw: Any) -> None:
    ledger.close()


class CmsUser(HttpUser):
    """A CMS and its readers: each task one request (or one write and its retries)."""

    wait_time = constant_throughput(RATE / USERS)

    def on_start(self) -> None:
        self.client.headers["Authorization"] = f"Bearer {KEY}"
        self.prefix = uuid.uuid4().hex[:8]
        self.seq = 0

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def _write(self, url: str, name: str, **kwargs: Any) -> Any:
        """POST until an answer that is neither 5xx nor 429; the last response."""
        resp = None
        for attempt in range(ATTEMPTS):
            resp = self.client.post(url, name=name, timeout=60, **kwargs)
            if resp.status_code and resp.status_code < 500 and resp.status_code != 429:
                return resp
            time.sleep(min(float(resp.headers.get("Retry-After") or 1), 5) * (attempt + 1))
        return resp

    def _accepted_item(self, resp: Any, kind: str, external_id: str) -> None:
        if resp.status_code == 202:
            body = resp.json()
            content_id, job_id = body["id"], body["job_id"]
        elif resp.status_code == 409:  # an earlier attempt of this same upload was stored
            content_id, job_id = resp.json()["error"]["details"]["id"], None
        else:
            return
        uploaded.append((content_id, external_id))
        ledger.write(t="item", id=content_id, kind=kind, external_id=external_id, job=job_id)

    @task(MIX["upload image"])
    def upload_image(self) -> None:
        n = self._next()
        ext = f"img-{self.prefix}-{n}"
        files = {"file": (f"{ext}.jpg", image_bytes(zlib.crc32(ext.encode())), "image/jpeg")}
        data = {"title": f"Photo {n}", "external_id": ext}
        resp = self._write("/v1/content", "/v1/content (image)", files=files, data=data)
        self._accepted_item(resp, "image", ext)

    @task(MIX["upload text"])
    def upload_text(self) -> None:
        n = self._next()
        ext = f"txt-{self.prefix}-{n}"
        body = {
            "title": f"Article {n}",
            "text": article(zlib.crc32(ext.encode())),
            "external_id": ext,
        }
        resp = self._write("/v1/content", "/v1/content (text)", json=body)
        self._accepted_item(resp, "text", ext)

    @task(MIX["interactions"])
    def interactions(self) -> None:
        batch = self._next()
        evts = []
        for k in range(EVENTS_PER_BATCH):
            user = f"user-{rng.randrange(CATALOGUE)}"
            if uploaded and rng.random() < 0.3:
                item = rng.choice(uploaded)[1]
            else:
                item = f"article-{rng.randrange(CATALOGUE)}"
            evts.append({
                "user_id": user, "item_id": item,
                "event_type": rng.choice(("view", "view", "view", "click", "like")),
                "event_id": f"ev-{self.prefix}-{batch}-{k}",
            })  # fmt: skip
        resp = self._write("/v1/interactions", "/v1/interactions", json={"events": evts})
        if resp.status_code == 200:
            body = resp.json()
            ledger.write(
                t="events", ids=[e["event_id"] for e in evts], stored=body["stored"],
                duplicates=body["duplicates"],
            )  # fmt: skip
            users_with_events.extend(e["user_id"] for e in evts[:2])

    @task(MIX["recommendations"])
    def recommendations(self) -> None:
        user = rng.choice(users_with_events)
        self.client.get(
            f"/v1/users/{user}/recommendations?limit=10",
            name="/v1/users/{id}/recommendations",
            timeout=60,
        )

    @task(MIX["read item"])
    def read_item(self) -> None:
        if not uploaded:
            self.list_items()
            return
        content_id = rng.choice(uploaded)[0]
        self.client.get(f"/v1/content/{content_id}?limit=10", name="/v1/content/{id}", timeout=60)

    @task(MIX["list items"])
    def list_items(self) -> None:
        self.client.get("/v1/content?limit=20", name="/v1/content (list)", timeout=60)

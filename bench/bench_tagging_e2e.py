"""End to end tagging throughput through HTTP next to raw onnxruntime, on one machine.

    python bench/bench_tagging_e2e.py [--texts 64] [--images 32] [--redis redis://127.0.0.1:6379/13]

"e2e" is wall time from the batch upload (``POST /v1/content:batch``) until the tagging job has
stored every tag, with a real Celery worker process (one process, one ORT thread) on a throw-away
SQLite database; "raw ORT" is ``session.run`` on the same items already preprocessed (texts
tokenised, sorted and padded; images decoded, resized and normalised) at the same batch size.
The worker is warmed up with one batch first, so model loading is not counted.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import io
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from services.gateway.main import create_app  # noqa: E402
from shared.auth import create_api_key, create_tenant  # noqa: E402
from shared.config import GatewaySettings  # noqa: E402
from shared.db.migrate import upgrade  # noqa: E402
from shared.db.session import session_scope  # noqa: E402
from shared.inference.registry import ModelRegistry  # noqa: E402
from workers.tagging.image import ImageTagger  # noqa: E402
from workers.tagging.text import TextEmbedder, pad_batch  # noqa: E402

TEXTS = [
    "Whisk eggs with sugar, fold in flour and bake the sponge cake for thirty minutes.",
    "We took the night train to Vienna and wandered the old town at dawn.",
    "The central bank raised interest rates again to slow inflation this quarter.",
    "The striker scored twice in the second half and the team won the league.",
    "A new smartphone with a folding screen and a faster chip went on sale today.",
    "Volunteers planted a thousand trees along the river to restore the wetland.",
    "The orchestra opened the season with a Mahler symphony and a new violin concerto.",
    "Researchers found that regular walking lowers blood pressure in older adults.",
]


def _photos(n: int) -> list[bytes]:
    from skimage import data

    base = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    out = []
    for i in range(n):
        im = Image.fromarray(base[i % len(base)])
        # A different crop per copy, so the pHash/duplicate path sees distinct images.
        w, h = im.size
        im = im.crop((i % 7, i % 5, w - i % 3, h - i % 4))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _wait(client: TestClient, key: str, job_id: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise TimeoutError(job_id)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--models-dir", default=os.environ.get("ATELIER_MODELS_DIR", "var/models"))
    p.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    p.add_argument("--texts", type=int, default=64)
    p.add_argument("--images", type=int, default=32)
    args = p.parse_args(argv)
    models_dir = Path(args.models_dir).resolve()
    texts = [f"{TEXTS[i % len(TEXTS)]} (note {i})" for i in range(args.texts)]
    photos = _photos(args.images)

    # Raw ORT on preprocessed inputs, same batch sizes as the worker uses for one job.
    reg = ModelRegistry(models_dir, threads=1)
    embedder = reg.get("text_embedder", TextEmbedder)
    tagger = reg.get("image_tagger", ImageTagger)
    seqs = sorted(embedder.tokenize(texts), key=len)
    batches = [pad_batch(seqs[i : i + 32]) for i in range(0, len(seqs), 32)]
    t0 = time.perf_counter()
    for ids, mask in batches:
        embedder._run(ids, mask)
    raw_text = len(texts) / (time.perf_counter() - t0)
    pixels = np.stack([tagger.preprocess(Image.open(io.BytesIO(b))) for b in photos])
    t0 = time.perf_counter()
    tagger._run(pixels, ["logits", "embedding"])
    raw_image = len(photos) / (time.perf_counter() - t0)

    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/bench.db"
        upgrade(db)
        env = dict(os.environ)
        env.update(
            ATELIER_ENVIRONMENT="test",
            ATELIER_DATABASE_URL=db,
            ATELIER_REDIS_URL=args.redis,
            ATELIER_STORAGE_URL=f"file://{tmp}/blobs",
            ATELIER_MODELS_DIR=str(models_dir),
        )
        settings = GatewaySettings(
            environment="test",
            database_url=db,
            redis_url=args.redis,
            storage_url=f"file://{tmp}/blobs",
            models_dir=models_dir,
        )
        with session_scope(settings.sqlalchemy_url) as s:
            tenant = create_tenant(s, name=f"bench-{uuid.uuid4().hex[:8]}")
            _, key = create_api_key(s, tenant_id=tenant.id, scopes=["read", "write"])
        log = open(f"{tmp}/worker.log", "wb")  # noqa: SIM115
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q",
             "tagging", "-c", "1", "-n", f"bench-{uuid.uuid4().hex[:6]}@%h", "--without-gossip",
             "--without-mingle", "--without-heartbeat"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            headers = {"Authorization": f"Bearer {key}"}
            with TestClient(create_app(settings)) as client:

                def run_texts() -> float:
                    t = time.perf_counter()
                    r = client.post(
                        "/v1/content:batch",
                        headers=headers,
                        json={"items": [{"text": x} for x in texts]},
                    )
                    assert _wait(client, key, r.json()["job_id"])["status"] == "succeeded"
                    return len(texts) / (time.perf_counter() - t)

                def run_images() -> float:
                    t = time.perf_counter()
                    files = [("file", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(photos)]
                    r = client.post("/v1/content:batch", headers=headers, files=files)
                    assert _wait(client, key, r.json()["job_id"])["status"] == "succeeded"
                    return len(photos) / (time.perf_counter() - t)

                run_texts()  # warm-up: the worker loads its models on the first job
                run_images()
                e2e_text, e2e_image = run_texts(), run_images()
        finally:
            worker.terminate()
            worker.wait(timeout=30)
            log.close()

    print(f"{'path':8s} {'raw ORT/s':>10s} {'e2e/s':>8s} {'e2e/raw':>8s}")
    print(f"{'texts':8s} {raw_text:10.1f} {e2e_text:8.1f} {e2e_text / raw_text:8.2f}")
    print(f"{'images':8s} {raw_image:10.1f} {e2e_image:8.1f} {e2e_image / raw_image:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Score the images a client gets from ``POST /v1/generate/images`` against the held-out icons.

    ATELIER_API_KEY=atl_... python bench/gan_api_score.py --api http://127.0.0.1:8000 --n 500
    ATELIER_API_KEY=atl_... python bench/gan_api_score.py --n 256 --tag flag

With ``make run`` running (or any deployment serving the bundled image generator), this asks
the public API for ``n`` images in requests of at most 64 (seeds ``seed``, ``seed + 64``, ...,
as ``bench/gan_grid.py --score`` draws them in process), waits for each job, downloads every
PNG through ``GET /v1/content/{id}/assets/original``, and scores them as the build did: FID,
precision and recall on the image tagger's embedding against the icons the build held out (of
the asked tag, with ``--tag``), printed beside the model's manifest figures. The generated
images stay in the tenant's content (kind ``generated``), as any client's would.

The tagger embedding and the held-out icons are read here (``--models``), not over HTTP.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gan_grid import heldout_icons, score_beside
from workers.generation.image import MAX_IMAGES


def fetch_images(
    client: httpx.Client, n: int, seed: int, tag: str | None, timeout_s: float
) -> tuple[list[Image.Image], str]:
    """``n`` images from the API and the model ref the jobs name."""
    images: list[Image.Image] = []
    model = ""
    for start in range(0, n, MAX_IMAGES):
        body: dict[str, object] = {"n": min(MAX_IMAGES, n - start), "seed": seed + start}
        if tag:
            body["tag"] = tag
        r = client.post("/v1/generate/images", params={"wait": 30}, json=body)
        r.raise_for_status()
        job, job_id = r.json(), r.json()["job_id"]
        deadline = time.monotonic() + timeout_s
        while job["status"] not in ("succeeded", "failed", "cancelled"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']}")
            time.sleep(1.0)
            job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] != "succeeded":
            raise RuntimeError(f"job {job_id} {job['status']}: {job.get('error')}")
        model = job["result"]["model"]
        for cid in job["result"]["content_ids"]:
            png = client.get(f"/v1/content/{cid}/assets/original")
            png.raise_for_status()
            images.append(Image.open(io.BytesIO(png.content)).convert("RGB"))
    return images, model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--api", default="http://127.0.0.1:8000")
    ap.add_argument("--key", default=os.environ.get("ATELIER_API_KEY"), help="a write key")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default=None, help="ask for this tag (and score against its icons)")
    ap.add_argument("--models", type=Path, default=Path("var/models"))
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per job")
    args = ap.parse_args(argv)
    if not args.key:
        ap.error("an API key is needed: --key or ATELIER_API_KEY")

    from shared.inference.manifest import read_manifest

    headers = {"Authorization": f"Bearer {args.key}"}
    with httpx.Client(base_url=args.api, headers=headers, timeout=60.0) as client:
        t0 = time.perf_counter()
        images, model = fetch_images(client, args.n, args.seed, args.tag, args.timeout)
        took = time.perf_counter() - t0
    real, tags = heldout_icons()
    if args.tag:
        real = [im for im, t in zip(real, tags, strict=True) if t == args.tag]
    name, _, version = model.partition(":")
    print(f"{len(images)} images from {model} over HTTP in {took:.0f}s, against {len(real)} "
          f"held-out icons{f' tagged {args.tag}' if args.tag else ''}")  # fmt: skip
    # The manifest's figures are for untagged requests; a tag's stand alone.
    manifest = None if args.tag else read_manifest(args.models / name / version).metrics
    score_beside(images, real, args.models, manifest, "over HTTP")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

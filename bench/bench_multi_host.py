"""Uploads/s across hosts: a gateway host and two worker hosts (network namespaces; run as root).

    .venv/bin/python -m bench.bench_multi_host [--photos 24] [--repeats 3] [--procs 1,2,4]

The deployment is tests/netns.py's: PostgreSQL, Redis and an S3 bucket (moto) on the services
host (the root namespace), the gateway on a host of its own, and N tagging worker processes
spread over two worker hosts (1: one host runs one; 2: one on each; 4: two on each), each host
with its own copy of the models and its own inference slots. A figure is photos / wall time from
the first upload (sequential, through the gateway's address, as a single client would) until
every photo's job has succeeded: upload and tagging overlap. Workers are warmed up first (one
photo per process), so model loading is not counted; each repeat uses a tenant of its own, so
near-duplicate lookups stay within a batch. Photos are scikit-image's, each cropped differently.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from skimage import data
from sqlalchemy import select

from bench.machine import cpu_model
from shared.auth import create_api_key, create_tenant
from shared.db.models import Job
from shared.db.scratch import DEFAULT_SERVER
from shared.db.session import session_scope
from tests.netns import Cluster, unavailable_reason

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "colorwheel",
         "camera", "coins", "moon", "clock", "brick", "page")  # fmt: skip


def photos(n: int) -> list[bytes]:
    out: list[bytes] = []
    for i in range(n):
        im = Image.fromarray(np.asarray(getattr(data, NAMES[i % len(NAMES)])())).convert("RGB")
        c = 3 * (i // len(NAMES))  # every round of the list cropped differently
        im = im.crop((c, c, im.width - c, im.height - c))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def run_batch(cluster: Cluster, batch: list[bytes], timeout: float = 600) -> float:
    """Upload ``batch`` as a fresh tenant and wait until all are tagged; returns uploads/s."""
    with session_scope(cluster.local_db_url) as s:
        tenant = create_tenant(s, name=f"bench-{time.monotonic_ns()}")
        _, key = create_api_key(s, tenant_id=tenant.id, scopes=["read", "write"])
    headers = {"Authorization": f"Bearer {key}"}
    job_ids: list[str] = []
    start = time.perf_counter()
    with httpx.Client(base_url=cluster.gateway_url, timeout=60, trust_env=False) as client:
        for i, body in enumerate(batch):
            r = client.post(
                "/v1/content", headers=headers, files={"file": (f"{i}.jpg", body, "image/jpeg")}
            )
            r.raise_for_status()
            job_ids.append(r.json()["job_id"])
    deadline = time.monotonic() + timeout
    while True:
        with session_scope(cluster.local_db_url) as s:
            statuses = list(s.scalars(select(Job.status).where(Job.id.in_(job_ids))))
        if all(st == "succeeded" for st in statuses):
            return len(batch) / (time.perf_counter() - start)
        if any(st in ("failed", "cancelled") for st in statuses):
            raise RuntimeError(f"a job failed:\n{cluster.logs_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not done in {timeout}s:\n{cluster.logs_tail()}")
        time.sleep(0.1)


def layout(procs: int) -> tuple[int, int]:
    """Worker processes on the two worker hosts: as even as the count allows."""
    return (procs - procs // 2, procs // 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--procs", default="1,2,4")
    args = ap.parse_args()
    why_not = unavailable_reason()
    if why_not is not None:
        print(f"cannot run: {why_not}", file=sys.stderr)
        return 2
    models = Path(os.environ.get("ATELIER_MODELS_DIR", ROOT / "var" / "models"))
    print(
        f"{cpu_model()}, {os.cpu_count()} cpus, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    print(f"{args.photos} photos a batch, median (min-max) of {args.repeats} repeats")
    print(f"{'worker processes':<18} {'hosts':<7} uploads/s")
    for procs in (int(p) for p in args.procs.split(",")):
        hosts = layout(procs)
        with (
            tempfile.TemporaryDirectory(prefix="bench-multihost-") as tmp,
            Cluster(Path(tmp), models, DEFAULT_SERVER, workers=hosts, beat=False) as cluster,
        ):
            run_batch(cluster, photos(2 * procs))  # warm-up: every process loads its models
            rates = [run_batch(cluster, photos(args.photos)) for _ in range(args.repeats)]
        med = statistics.median(rates)
        label = f"{hosts[0]}+{hosts[1]}"
        print(f"{procs:<18} {label:<7} {med:.2f} ({min(rates):.2f}-{max(rates):.2f})")
    # Other processes share the machine: the load says how far the figures are its own.
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

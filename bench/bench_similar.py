"""``GET /v1/content/{id}/similar`` by tenant size: the in-memory set vs reading every vector.

    python bench/bench_similar.py [--sizes 1000,10000,50000] [--dim 1280] [--repeats 7]
        [--db sqlite|postgresql]

The answer is exact either way: the cosine of the item's vector with every vector of the tenant
in the same space and model, top 10. "exact scan" reads all those vectors from the database on
every request (what the endpoint did before, and does with ``ATELIER_SIMILAR_CACHE_MB=0``);
"cached" is ``services.gateway.similar.SimilarIndex`` answering from memory after its one-query
freshness check; "cached, +32 new" is the request right after a tagging job stored 32 new
vectors (read and merged); "first request" loads the set into an empty cache. Vectors are
1280-d (the image space), random, in clusters. ms per request, median (min-max); the answers of
the cache and the scan are checked to be the same on every repeat.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import cpu_model  # noqa: E402
from sqlalchemy import insert, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from services.gateway.similar import SimilarIndex  # noqa: E402
from shared.auth import create_tenant  # noqa: E402
from shared.db.models import ContentItem, Embedding, new_id, utcnow  # noqa: E402
from shared.db.scratch import scratch_url  # noqa: E402
from shared.db.session import session_scope  # noqa: E402

MODEL = "image_tagger:bench-1"
INSERT_ROWS = 5_000
LIMIT = 10


def _vectors(rng: np.random.Generator, n: int, dim: int, centres: np.ndarray) -> np.ndarray:
    picks = centres[rng.integers(0, len(centres), n)]
    return (picks + 0.5 * rng.standard_normal((n, dim))).astype("<f4")


def _store(s: Session, tenant: str, vectors: np.ndarray, start: Any) -> list[str]:
    ids = []
    for lo in range(0, len(vectors), INSERT_ROWS):
        chunk = vectors[lo : lo + INSERT_ROWS]
        items, embs = [], []
        for k, vec in enumerate(chunk):
            cid = new_id()
            ids.append(cid)
            at = start + timedelta(microseconds=lo + k)
            items.append({"id": cid, "tenant_id": tenant, "kind": "image", "status": "ready",
                          "created_at": at, "updated_at": at, "meta": {}})  # fmt: skip
            embs.append({"content_id": cid, "space": "image", "tenant_id": tenant,
                         "model": MODEL, "dim": vec.shape[0], "vector": vec.tobytes(),
                         "created_at": at})  # fmt: skip
        s.execute(insert(ContentItem), items)
        s.execute(insert(Embedding), embs)
        s.commit()
    return ids


def _timed(into: list[float], fn: Callable[..., Any], *args: Any) -> Any:
    t0 = time.perf_counter()
    out = fn(*args)
    into.append((time.perf_counter() - t0) * 1000)
    return out


def _cell(v: list[float]) -> str:
    return f"{statistics.median(v):8.1f} ({min(v):7.1f}-{max(v):7.1f})"


def _measure(
    db: str, n: int, args: argparse.Namespace, rng: np.random.Generator, cols: tuple[str, ...]
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {c: [] for c in cols}
    with session_scope(db) as s:
        tenant = create_tenant(s, name=f"sim-{uuid.uuid4().hex[:8]}").id
        centres = rng.standard_normal((max(1, n // 50), args.dim))
        start = utcnow() - timedelta(days=1)
        ids = _store(s, tenant, _vectors(rng, n, args.dim, centres), start)
        if args.db == "postgresql":
            s.execute(text("ANALYZE embeddings"))
            s.commit()
        index, exact = SimilarIndex(2**31), SimilarIndex(0)

        def ask(ix: SimilarIndex, q: np.ndarray, own: str) -> list[tuple[str, float]]:
            return ix.nearest(s, tenant_id=tenant, space="image", model=MODEL, query=q,
                              exclude=own, limit=LIMIT)  # fmt: skip

        ask(index, centres[0], ids[0])  # load the set once
        for r in range(args.repeats):
            own = ids[int(rng.integers(0, len(ids)))]
            q = _vectors(rng, 1, args.dim, centres)[0]
            want = _timed(times[cols[0]], ask, exact, q, own)
            got = _timed(times[cols[1]], ask, index, q, own)
            # A tagging job's worth of new vectors, then the next request.
            ids += _store(s, tenant, _vectors(rng, 32, args.dim, centres), utcnow())
            after = _timed(times[cols[2]], ask, index, q, own)
            _timed(times[cols[3]], ask, SimilarIndex(2**31), q, own)
            again = ask(exact, q, own)
            for a, b in ((want, got), (again, after)):
                if [c for c, _ in a] != [c for c, _ in b]:
                    raise SystemExit(f"answers differ at {n} vectors, repeat {r}")
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--sizes", default="1000,10000,50000")
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    rng = np.random.default_rng(7)

    print(f"CPU: {cpu_model()}; {args.db}; {args.dim}-d vectors; top {LIMIT}; "
          f"median of {args.repeats} (min-max), ms per request")  # fmt: skip
    cols = ("exact scan", "cached", "cached, +32 new", "first request")
    print(f"{'vectors':>8s}  " + "  ".join(f"{c:>25s}" for c in cols) + "  scan / cached")
    with tempfile.TemporaryDirectory() as tmp, scratch_url(args.db, tmp) as db:
        for n in sizes:
            times = _measure(db, n, args, rng, cols)
            scan, cached = (statistics.median(times[c]) for c in cols[:2])
            print(f"{n:8d}  " + "  ".join(f"{_cell(times[c]):>25s}" for c in cols)
                  + f"  {scan / cached:12.1f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Near-duplicate lookup per tagging job, by tenant size: indexed pHash blocks vs full scan.

    python bench/bench_duplicates.py [--sizes 1000,10000,100000] [--batch 32] [--repeats 5]
        [--db sqlite|postgresql]

Each tagging job finds, for each image of its batch, the oldest image of the tenant whose 64-bit
pHash is within Hamming distance 6 (``workers.tagging.duplicates.DuplicateScan``). "full scan"
reads every pHash of the tenant and compares them in numpy (what every job did before); "pHash
blocks" reads only the rows that share a 16-bit block within 1 bit with one of the batch's
pHashes (multi-index hashing: ``shared/phash_index.py``), then compares those. Both give the
same answers (checked here on every repeat, and in ``tests/unit/test_phash_index.py``).

The tenant's pHashes come in clusters of 2-3 (one base hash per 2.5 images, each stored image
0-9 bits from its base), as re-encodes and crops of the same photos make them; a third of each
batch is 0-8 bits from a stored image's base. ms per batch, median (min-max), the rows each
lookup read, and how many batch images were found to be near-duplicates.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import cpu_model  # noqa: E402
from sqlalchemy import insert, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from shared import phash_index  # noqa: E402
from shared.auth import create_tenant  # noqa: E402
from shared.db.models import ContentItem, ContentKind, new_id, utcnow  # noqa: E402
from shared.db.scratch import scratch_url  # noqa: E402
from shared.db.session import session_scope  # noqa: E402
from workers.tagging.duplicates import DuplicateScan  # noqa: E402

MAX_DISTANCE = 6
INSERT_ROWS = 20_000


def _flip(h: int, bits: int, rng: random.Random) -> int:
    for b in rng.sample(range(64), bits):
        h ^= 1 << b
    return h


def _fill(s: Session, tenant: str, n: int, rng: random.Random) -> list[int]:
    """``n`` stored images in clusters; returns the cluster centres."""
    centres = [rng.getrandbits(64) for _ in range(max(1, n * 2 // 5))]
    start = utcnow() - timedelta(days=365)
    for lo in range(0, n, INSERT_ROWS):
        rows = []
        for i in range(lo, min(n, lo + INSERT_ROWS)):
            h = f"{_flip(centres[i % len(centres)], rng.randint(0, 9), rng):016x}"
            rows.append(
                {"id": new_id(), "tenant_id": tenant, "kind": "image", "status": "ready",
                 "phash": h, "created_at": start + timedelta(seconds=i), "updated_at": start,
                 "meta": {}, **phash_index.columns(h)}
            )  # fmt: skip
        s.execute(insert(ContentItem), rows)
        s.commit()
    return centres


def _batch(
    s: Session, tenant: str, centres: list[int], size: int, rng: random.Random
) -> list[ContentItem]:
    items = [ContentItem(tenant_id=tenant, kind=ContentKind.image) for _ in range(size)]
    s.add_all(items)
    s.commit()
    for j, item in enumerate(items):
        near = j % 3 == 0
        base = centres[rng.randrange(len(centres))] if near else rng.getrandbits(64)
        item.phash = f"{_flip(base, rng.randint(0, 8), rng):016x}"
    return items


def _lookup(s: Session, items: list[ContentItem], *, indexed: bool) -> tuple[list[Any], int]:
    # The full scan is the path taken past the index's radius; forced here at distance 6.
    with mock.patch.object(phash_index, "indexable", return_value=indexed):
        scan = DuplicateScan.load(s, items, max_distance=MAX_DISTANCE)
        found = [scan.match(it, max_distance=MAX_DISTANCE) for it in items]
    return found, len(scan.ids)


def _cell(v: list[float]) -> str:
    return f"{statistics.median(v):8.1f} ({min(v):6.1f}-{max(v):6.1f})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    rng = random.Random(1)

    print(f"CPU: {cpu_model()}; {args.db}; batch {args.batch}; distance <= {MAX_DISTANCE}; "
          f"median of {args.repeats} (min-max), ms per batch")  # fmt: skip
    print(f"{'tenant images':>13s}  {'full scan':>22s}  {'pHash blocks':>22s}  {'speed-up':>8s}"
          f"  rows read (full / blocks)  matches")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, scratch_url(args.db, tmp) as db:
        for n in sizes:
            with session_scope(db) as s:
                tenant = create_tenant(s, name=f"dups-{uuid.uuid4().hex[:8]}").id
                centres = _fill(s, tenant, n, rng)
                if args.db == "postgresql":
                    # What autovacuum does after a bulk load; the planner needs the statistics.
                    s.execute(text("ANALYZE content_items"))
                    s.commit()
                times: dict[bool, list[float]] = {False: [], True: []}
                rows: dict[bool, int] = {}
                matches = 0
                for _ in range(args.repeats):
                    items = _batch(s, tenant, centres, args.batch, rng)
                    answers = {}
                    for indexed in (False, True):  # both on the same batch, in turn
                        t0 = time.perf_counter()
                        answers[indexed], rows[indexed] = _lookup(s, items, indexed=indexed)
                        times[indexed].append((time.perf_counter() - t0) * 1000)
                    if answers[True] != answers[False]:
                        raise SystemExit(f"answers differ at {n} images")
                    matches += sum(a is not None for a in answers[True])
                    s.rollback()

            full, blocks = (statistics.median(times[k]) for k in (False, True))
            print(
                f"{n:13d}  {_cell(times[False])}  {_cell(times[True])}  {full / blocks:7.1f}x"
                f"  {rows[False]:>10d} / {rows[True]:<10d}  {matches}/{args.batch * args.repeats}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

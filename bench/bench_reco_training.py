"""Recommender training time at the default budget, as the training job runs it.

    python -m bench.bench_reco_training [--sizes 100000,1000000] [--pg postgresql+psycopg://...]

For each size: a throw-away PostgreSQL database, synthetic events (`bench.synthetic_interactions
.generate`, users and items scaled with the log) ingested through our bulk path, then
`train_for_tenant` exactly as the Celery job calls it (read the log from SQL, select within the
default budget, refit, save the version), timed end to end. Targets: 100k events in under 2
minutes, 1M in under 15, on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.bench_reco_latency import load
from bench.machine import cpu_model
from shared.auth import create_tenant
from shared.db.migrate import upgrade
from shared.db.scratch import DEFAULT_SERVER, scratch_database
from shared.db.session import session_scope
from workers.training.recommender import default_budget_s, train_for_tenant


def run(pg: str, events: int) -> str:
    users, items = max(events // 20, 100), max(events // 25, 100)
    with scratch_database(pg, prefix="atelier_bench_train") as url:
        upgrade(url)
        with session_scope(url) as s:
            tenant = create_tenant(s, name="bench").id
        t0 = time.perf_counter()
        load(url, tenant, users, items, events)
        ingest_s = time.perf_counter() - t0
        stages: list[tuple[float, str]] = []
        with tempfile.TemporaryDirectory() as models, session_scope(url) as s:
            start = time.perf_counter()
            result = train_for_tenant(
                s,
                tenant_id=tenant,
                models_dir=Path(models),
                progress=lambda _p, stage: stages.append((time.perf_counter() - start, stage)),
            )
            total = time.perf_counter() - start
    m = result["metrics"]
    timeline = ", ".join(f"{stage} at {t:.0f} s" for t, stage in stages)
    return (
        f"{events:>9,} events ({m['n_users']:,} users x {m['n_items']:,} items): trained in "
        f"{total:.0f} s (budget {default_budget_s(events):.0f} s; tuning {m['tuning_s']:.0f} s, "
        f"refit {m['refit_s']:.0f} s), selected {m['selected']}; ingest {ingest_s:.0f} s\n"
        f"    {timeline}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--pg", default=DEFAULT_SERVER)
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_model()}; {os.cpu_count()} logical CPUs; load average {os.getloadavg()}")
    for n in (int(x) for x in args.sizes.split(",")):
        print(run(args.pg, n), flush=True)


if __name__ == "__main__":
    main()

"""Recommender quality and request-time latency on synthetic data.

1. Quality: the selection table and the per-user test split beside tuned peers (as `atelier
   reco evaluate` prints) on a medium synthetic catalogue (5k users x 2k items x 200k events).
2. Latency: in-process top-10 for one user (fold-in of the user's row, seen and disliked items
   excluded) on a 100k-item catalogue, with the model the selector picks at that size (EASE is
   out of the running there: O(items^3)), and the runner-up for comparison.

    python -m bench.bench_recommender [--quick]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import implicit
import numpy as np
import scipy
import sklearn
from threadpoolctl import threadpool_info, threadpool_limits

from bench.synthetic_interactions import generate
from ranking.grids import Point
from ranking.models import MODELS, Recommender, recommend
from ranking.models import from_description as load_description
from ranking.report import compare
from ranking.select import train_and_select


def machine() -> str:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    blas = ", ".join(
        f"{i['internal_api']} {i.get('version')} ({i['num_threads']} threads)"
        for i in threadpool_info()
        if i["user_api"] == "blas"
    )
    return (
        f"CPU: {cpu}; {len(_cpus())} logical CPUs visible\n"
        f"Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"scikit-learn {sklearn.__version__}, implicit {implicit.__version__}\n"
        f"BLAS: {blas}; benchmarks limit BLAS to 1 thread"
    )


def _cpus() -> list[int]:
    import os

    return sorted(os.sched_getaffinity(0))


def quality(users: int, items: int, events: int, budget_s: float) -> str:
    data = generate(users, items, events, seed=0)
    label = f"== quality: synthetic {users} users x {items} items x {events} events"
    return compare(data.to_interactions(), budget_s=budget_s, label=label).table()


def _latency_ms(model: Recommender, X: object, excluded: object, users: np.ndarray) -> np.ndarray:
    times = []
    for u in users:
        row = X[u]  # type: ignore[index]
        start = time.perf_counter()
        recommend(model, row, k=10, exclude_items=excluded[u].indices)  # type: ignore[index]
        times.append(time.perf_counter() - start)
    return np.array(times) * 1e3


def latency(users: int, items: int, events: int, budget_s: float, requests: int) -> str:
    data = generate(users, items, events, seed=1)
    inter = data.to_interactions()
    start = time.perf_counter()
    # Per docs/perf.md, ALS or item-kNN at this size; BPR and PureSVD would triple the tuning time
    # here for what the medium benchmark shows to be no gain.
    selection = train_and_select(
        inter,
        candidates=["als", "itemknn"],
        grids={
            "als": [Point("als", {"factors": 64, "regularization": r}) for r in (10.0, 30.0)],
            "itemknn": [Point("itemknn", {"k": k}) for k in (100, 50)],
        },
        budget_s=budget_s,
        max_eval_users=2000,
        blend=False,
    )
    took = time.perf_counter() - start
    X, excluded = selection.matrix.X, selection.matrix.excluded
    rng = np.random.default_rng(0)
    active = np.flatnonzero(np.diff(X.indptr) > 0)
    sample = rng.choice(active, size=min(requests, len(active)), replace=False)
    lines = [
        f"== latency: {inter.n_users} users x {inter.n_items} items x {len(inter)} events; "
        f"selection (als, itemknn) took {took:.0f} s, picked {selection.best} "
        f"{selection.model.describe()}",
        f"median history length of sampled users: {int(np.median(np.diff(X.indptr)[sample]))}",
        "",
        f"{'model':<12} {'val NDCG@10':>11} {'fit s':>7} {'p50 ms':>7} {'p99 ms':>7}",
    ]
    for rep in selection.candidates:
        if rep.name == selection.best:
            model, fit_s = selection.model, selection.refit_s
        elif rep.name in MODELS and rep.name != "popularity":
            t0 = time.perf_counter()
            model = load_description(rep.description).fit(X)
            fit_s = time.perf_counter() - t0
        else:
            continue
        _latency_ms(model, X, excluded, sample[:20])  # warm caches and lazy state
        ms = _latency_ms(model, X, excluded, sample)
        tag = f"{rep.name}{' *' if rep.name == selection.best else ''}"
        lines.append(
            f"{tag:<12} {rep.validation.ndcg:>11.4f} {fit_s:>7.2f} "
            f"{np.percentile(ms, 50):>7.2f} {np.percentile(ms, 99):>7.2f}"
        )
    lines.append("(* selected; fit s = refit on all data, latency = fold-in + score + top-10)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args(argv)
    with threadpool_limits(1, user_api="blas"):
        print(machine(), flush=True)
        print()
        if args.quick:
            print(quality(1000, 400, 30_000, budget_s=20.0), flush=True)
            print()
            print(latency(3000, 20_000, 60_000, budget_s=20.0, requests=200))
        else:
            print(quality(5000, 2000, 200_000, budget_s=150.0), flush=True)
            print()
            print(latency(30_000, 100_000, 600_000, budget_s=120.0, requests=1000))


if __name__ == "__main__":
    main()

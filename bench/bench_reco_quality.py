"""Recommendation quality on real public data, through the public HTTP API, beside tuned peers.

For each data set: split it with the protocol of `atelier reco evaluate` (each user's latest 20%
of events are the test; users with fewer than 5 events train only; ties in time shuffled with a
seed), send the training part to a suite started exactly as `make run` does (`atelier run`,
SQLite, private Redis) with `POST /v1/interactions`, train with `POST /v1/recommender/train`,
then ask `GET /v1/users/{id}/recommendations?limit=10` for every test user and score NDCG@10
against the held-out items. The peers (implicit ALS and BPR, defaults and tuned; EASE; RP3beta;
popularity) are tuned on a validation split carved from the same training part and scored on
the same test users, in the same run.

    python -m bench.bench_reco_quality [--sets ml-100k-4,lastfm-2k,...] [--budget-s S]

Real data comes from `bench.datasets` (kept out of git, checked by sha256: `python -m
bench.datasets check` says where to get it). Data sets missing here are skipped with a note.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.datasets import DatasetError, load
from bench.machine import cpu_model
from bench.synthetic_interactions import Shaped, bursty, counts_no_time
from ranking.data import Interactions
from ranking.evaluate import Holdout, K, bootstrap_ci
from ranking.report import split_for_evaluation, tune_peers

ROOT = Path(__file__).resolve().parent.parent
BATCH = 10_000


@dataclass(frozen=True)
class DataSet:
    name: str
    describe: str
    load: Callable[[], Shaped]
    # How a CMS would send each value: a rating event carries the rating, a play count is a
    # view with the count as value.
    event_type: str
    min_value: float = -np.inf


def _real(name: str, min_value: float = -np.inf) -> Callable[[], Shaped]:
    def get() -> Shaped:
        users, items, values, times = load(name)
        keep = values >= min_value
        return users[keep], items[keep], values[keep], None if times is None else times[keep]

    return get


DATASETS = {
    d.name: d
    for d in (
        DataSet("ml-100k-4", "MovieLens 100K, ratings >= 4", _real("ml-100k", 4), "rating"),
        DataSet("ml-100k", "MovieLens 100K, all ratings", _real("ml-100k"), "rating"),
        DataSet(
            "ml-latest-small-4",
            "MovieLens latest-small, ratings >= 4",
            _real("ml-latest-small", 4),
            "rating",
        ),
        DataSet("lastfm-2k", "Last.fm 2K play counts, no timestamps", _real("lastfm-2k"), "view"),
        DataSet("synthetic-bursty", "synthetic: one session burst per user", bursty, "view"),
        DataSet(
            "synthetic-counts",
            "synthetic: play counts, no timestamps",
            lambda: counts_no_time(1500, 8000, 60_000),
            "view",
        ),
    )
}


def _interactions(data: Shaped) -> Interactions:
    users, items, values, times = data
    return Interactions.from_arrays(
        users, items, values, np.zeros(len(users)) if times is None else times
    )


class Suite:
    """`atelier run` on SQLite and a private Redis in a scratch directory."""

    def __init__(self, var_dir: Path, port: int, reco_port: int, built_models: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
        env.pop("REDIS_URL", None)
        # The serving models (`make models-serving`) are linked in; recommender versions are
        # written to the scratch directory only.
        models = var_dir / "models"
        models.mkdir()
        for entry in built_models.iterdir() if built_models.is_dir() else ():
            if entry.name != "recommender" and not entry.name.startswith("."):
                (models / entry.name).symlink_to(entry.resolve())
        env.update(
            ATELIER_DATABASE_URL=f"sqlite:///{var_dir / 'atelier.db'}",
            ATELIER_MODELS_DIR=str(models),
            PYTHONUNBUFFERED="1",
        )
        self.log_path = var_dir / "suite.log"
        self.env = env
        self.url = f"http://127.0.0.1:{port}"
        self.log = (var_dir / "suite.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "suite.cli", "run", "--var-dir", str(var_dir),
             "--gateway-port", str(port), "--recommender-port", str(reco_port),
             "--no-build-models"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the suite exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the suite is not ready:\n{self.log_path.read_text()[-3000:]}")

    def key(self, tenant: str) -> str:
        def cli(*args: str) -> str:
            out = subprocess.run(
                [sys.executable, "-m", "suite.cli", *args],
                cwd=ROOT, env=self.env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            return out.stdout

        cli("tenants", "create", tenant)
        return cli("keys", "create", "--tenant", tenant, "--scopes", "read,write").split()[-1]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _events(train: Interactions, event_type: str, timed: bool) -> list[dict[str, Any]]:
    out = []
    for u, i, w, t in zip(
        train.user_idx, train.item_idx, train.weight, train.timestamp, strict=True
    ):
        ev: dict[str, Any] = {
            "user_id": train.user_ids[u],
            "item_id": train.item_ids[i],
            "event_type": event_type,
            "value": float(w),
        }
        if timed:
            ev["timestamp"] = datetime.fromtimestamp(float(t), UTC).isoformat()
        out.append(ev)
    return out


def _wait_job(c: httpx.Client, job_id: str, timeout: float = 3600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(1.0)
    raise RuntimeError(f"job {job_id} did not finish")


def _ndcg_through_api(
    c: httpx.Client, train: Interactions, test: Holdout
) -> tuple[np.ndarray, list[float]]:
    discounts = 1.0 / np.log2(np.arange(2, K + 2))
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])
    per_user = np.zeros(len(test.users))
    latencies = []
    for n, u in enumerate(test.users):
        targets = {train.item_ids[i] for i in test.targets[u].indices}
        t0 = time.perf_counter()
        r = c.get(f"/v1/users/{train.user_ids[u]}/recommendations", params={"limit": K})
        latencies.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
        got = [it["external_id"] or it["id"] for it in r.json()["items"]][:K]
        hit = np.array([g in targets for g in got], dtype=float)
        per_user[n] = float(hit @ discounts[: len(hit)]) / ideal[min(len(targets), K)]
    return per_user, latencies


def _chosen(metrics: dict[str, Any]) -> str:
    chosen = [c for c in metrics.get("candidates", []) if c["name"] == metrics["selected"]]
    return chosen[0]["label"] if chosen else str(metrics["selected"])


def run_one(suite: Suite, ds: DataSet, budget_s: float | None) -> str:
    data = ds.load()
    inter = _interactions(data)
    timed = data[3] is not None
    train, test = split_for_evaluation(inter)
    lines = [
        f"== {ds.name}: {ds.describe}; {inter.n_users} users, {inter.n_items} items, "
        f"{len(inter)} events; {len(test.users)} test users"
        + ("" if timed else "; no timestamps sent (the server stamps them)")
    ]
    key = suite.key(f"bench-{ds.name}")
    with httpx.Client(
        base_url=suite.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    ) as c:
        events = _events(train, ds.event_type, timed)
        t0 = time.perf_counter()
        for start in range(0, len(events), BATCH):
            r = c.post("/v1/interactions", json={"events": events[start : start + BATCH]})
            r.raise_for_status()
        ingest_s = time.perf_counter() - t0
        body = {} if budget_s is None else {"budget_s": budget_s}
        t0 = time.perf_counter()
        job = _wait_job(c, c.post("/v1/recommender/train", json=body).json()["job_id"])
        train_s = time.perf_counter() - t0
        if job["status"] != "succeeded":
            return "\n".join([*lines, f"training {job['status']}: {job.get('error')}"])
        metrics = job["result"]["metrics"]
        time.sleep(3)  # the recommender notices the new active version on its next check
        per_user, latencies = _ndcg_through_api(c, train, test)
    api_ndcg = float(per_user.mean())
    lo, hi = bootstrap_ci(per_user)
    lines.append(
        f"through the API: NDCG@10 {api_ndcg:.4f} (95% CI {lo:.4f}-{hi:.4f}); selected "
        f"{_chosen(metrics)} on {metrics.get('validation_users')} validation users; "
        f"ingest {ingest_s:.1f} s, train job {train_s:.1f} s; request latency p50 "
        f"{np.percentile(latencies, 50):.1f} ms, p99 {np.percentile(latencies, 99):.1f} ms"
    )
    peers = tune_peers(train, test)
    best = max(peers, key=lambda p: p.test.ndcg)
    lines.append(f"{'model':<28} {'NDCG@10':>8} {'95% CI':>15} {'Recall@10':>9} {'coverage':>8}")
    for p in peers:
        m = p.test
        ci = f"{m.ndcg_lo:.4f}-{m.ndcg_hi:.4f}"
        lines.append(f"{p.name:<28} {m.ndcg:>8.4f} {ci:>15} {m.recall:>9.4f} {m.coverage:>8.3f}")
    lines.append(
        f"atelier (API) / best tuned peer ({best.name}, {best.test.ndcg:.4f}): "
        f"{api_ndcg / best.test.ndcg:.3f}x"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", default=",".join(DATASETS))
    parser.add_argument("--budget-s", type=float, default=None, help="default: the product's")
    parser.add_argument("--port", type=int, default=18600)
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path(os.environ.get("ATELIER_MODELS_DIR", ROOT / "var" / "models")),
        help="where `make models-serving` built the taggers the suite needs to start",
    )
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_model()}; {os.cpu_count()} logical CPUs")
    with tempfile.TemporaryDirectory(prefix="atelier-reco-bench-") as tmp:
        suite = Suite(Path(tmp), args.port, args.port + 1, args.models_dir)
        try:
            suite.wait_ready()
            for name in args.sets.split(","):
                try:
                    print(run_one(suite, DATASETS[name], args.budget_s), flush=True)
                except DatasetError as exc:
                    print(f"== {name}: skipped ({exc})", flush=True)
        finally:
            suite.stop()


if __name__ == "__main__":
    main()

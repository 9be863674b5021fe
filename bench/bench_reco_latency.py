"""Top-10 latency of the recommender over loopback HTTP vs raw in-process scoring.

    python -m bench.bench_reco_latency --users 100000 --items 100000 --events 300000
        [--rounds 5] [--compare-tree /path/to/other/checkout] [--model als|selected]

Builds a synthetic catalogue in a throw-away PostgreSQL database (ingested through our bulk
path, and not ANALYZEd afterwards: the statistics lag a bulk import in production too), trains
ALS once (or, with ``--model selected``, whatever training selects at this size), saves it as a
model version, starts the recommender service and the gateway with uvicorn on free loopback
ports and times sequential keep-alive requests, in rounds that alternate between the targets
(the recommender's own endpoint, the gateway's public one with API-key auth, and, with
``--compare-tree``, the recommender of another source tree on the same database). Next to it:
the same requests in-process (fold-in with the SQL history read, filters, reasons) and the raw
model part alone (score all items + top-k).
Target: p50 < 5 ms, p99 < 20 ms over HTTP (written for the recommender's endpoint).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fastapi
import httpx
import implicit
import numpy as np
import psycopg
import scipy
import uvicorn
from threadpoolctl import threadpool_limits

from bench.machine import cpu_model
from bench.synthetic_interactions import EVENT_TYPES, generate
from ranking.data import build_matrix
from ranking.models import ALS, Popularity
from ranking.select import train_and_select
from services.gateway.interactions import ingest
from services.recommender.candidates import Query
from services.recommender.candidates import top_indices as _top
from services.recommender.recommendations import Recommendations
from services.recommender.store import ModelStore
from shared import internal_auth
from shared.auth import create_api_key, create_tenant
from shared.config import DEV_INTERNAL_SECRET
from shared.db.migrate import upgrade
from shared.db.scratch import DEFAULT_SERVER, libpq, scratch_database
from shared.db.session import get_sessionmaker, session_scope
from shared.schemas.recommendations import DEFAULT_EVENT_WEIGHTS, TENANT_HEADER
from workers.training.recommender import default_budget_s, read_interactions, save_version

ROOT = Path(__file__).resolve().parent.parent


def _signed(name: str, target: str, headers: dict[str, dict[str, str]]) -> dict[str, str]:
    """The recommender refuses unsigned calls: sign each as the gateway does (the services run
    with the development secret)."""
    own = headers[name]
    if TENANT_HEADER not in own:
        return own
    return {
        **own,
        **internal_auth.sign(
            DEV_INTERNAL_SECRET, method="GET", target=target, tenant=own[TENANT_HEADER]
        ),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def percentiles(ms: list[float]) -> str:
    a = np.asarray(ms)
    return (
        f"p50 {np.percentile(a, 50):6.2f} ms  p90 {np.percentile(a, 90):6.2f} ms  "
        f"p99 {np.percentile(a, 99):6.2f} ms  mean {a.mean():6.2f} ms  (n={len(a)})"
    )


def load(url: str, tenant: str, users: int, items: int, events: int) -> None:
    data = generate(users, items, events, seed=0)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    base = float(data.timestamp[0])
    batch: list[dict[str, object]] = []
    with session_scope(url) as s:
        for k in range(events):
            batch.append(
                {
                    "user_id": f"u{data.user[k]}",
                    "item_id": f"i{data.item[k]}",
                    "event_type": EVENT_TYPES[data.event[k]],
                    "timestamp": t0 + timedelta(seconds=float(data.timestamp[k]) - base),
                }
            )
            if len(batch) == 10_000 or k == events - 1:
                ingest(
                    s,
                    tenant_id=tenant,
                    raw_events=batch,
                    event_weights=DEFAULT_EVENT_WEIGHTS,
                    max_events=10_000,
                )
                batch = []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="alternations between targets")
    parser.add_argument(
        "--compare-tree",
        help="also time the recommender of this source tree (e.g. an export of the last commit)",
    )
    parser.add_argument("--pg", default=DEFAULT_SERVER)
    parser.add_argument(
        "--model",
        choices=("als", "selected"),
        default="als",
        help="ALS with 64 factors, or what training selects at this size (its default budget)",
    )
    args = parser.parse_args(argv)
    threadpool_limits(1)
    cleanup = contextlib.ExitStack()
    url = cleanup.enter_context(scratch_database(args.pg, prefix="atelier_bench"))
    with psycopg.connect(libpq(url)) as conn:
        pg_version = conn.info.server_version
    models_dir = Path(tempfile.mkdtemp(prefix="atelier-bench-models-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        print(
            f"{platform.machine()} {os.cpu_count()} cpus ({cpu_model()}), "
            f"Python {platform.python_version()}, numpy {np.__version__}, scipy "
            f"{scipy.__version__}, implicit {implicit.__version__}, fastapi "
            f"{fastapi.__version__}, uvicorn {uvicorn.__version__}, PostgreSQL {pg_version}; "
            f"load average {_load()}"
        )
        upgrade(url)
        with session_scope(url) as s:
            tenant = create_tenant(s, name="bench").id
            _, api_key = create_api_key(s, tenant_id=tenant, scopes=["read"])
        start = time.perf_counter()
        load(url, tenant, args.users, args.items, args.events)
        took = time.perf_counter() - start
        print(
            f"ingested {args.events} events in {took:.1f} s ({args.events / took:,.0f} events/s, "
            f"batches of 10,000 through ingest(), items created on the way)"
        )

        with session_scope(url) as s:
            inter, last_id = read_interactions(
                s, tenant_id=tenant, event_weights=DEFAULT_EVENT_WEIGHTS
            )
            start = time.perf_counter()
            if args.model == "selected":
                selection = train_and_select(inter, budget_s=default_budget_s(len(inter)))
                matrix, model = selection.matrix, selection.model
                what = f"selected {model.describe()}"
            else:
                matrix = build_matrix(inter)
                model = ALS(factors=64, regularization=10.0, iterations=10).fit(matrix.X)
                what = "ALS(64 factors)"
            fit_s = time.perf_counter() - start
            fallback = Popularity().fit(matrix.X)
            trending = Popularity(half_life_days=7.0).fit_events(
                inter.item_idx, inter.weight, inter.timestamp, n_items=inter.n_items
            )
            save_version(
                s,
                tenant_id=tenant,
                models_dir=models_dir,
                model=model,
                fallback=fallback,
                trending=trending,
                item_ids=inter.item_ids,
                metrics={"last_event_id": last_id},
            )
        print(
            f"catalogue: {inter.n_users} users x {inter.n_items} items with events; "
            f"{what}, trained in {fit_s:.1f} s"
        )

        rng = np.random.default_rng(1)
        active = rng.choice(inter.user_ids, size=args.requests)
        users = [*active.tolist(), *(f"new-{i}" for i in range(args.requests // 10))]
        rng.shuffle(users)

        # Raw model part: the user's row from the training matrix, score all items, top-10.
        raw_ms = []
        for u in active[:500]:
            r = matrix.X[matrix.user_index[u]]
            t = time.perf_counter()
            scores = model.score_users(r)[0]
            scores[r.indices] = -np.inf
            _top(scores, 10)
            raw_ms.append((time.perf_counter() - t) * 1000)

        # In-process service call: SQL history read, fold-in, exclusion, reasons, item rows.
        store = ModelStore(models_dir, get_sessionmaker(url), check_interval_s=5.0)
        inproc_ms = []
        with session_scope(url) as s:
            for u in users[:50]:
                Recommendations(s, tenant, store.state(s, tenant)).for_user(u, Query())
            for u in users[:500]:
                t = time.perf_counter()
                Recommendations(s, tenant, store.state(s, tenant)).for_user(u, Query())
                inproc_ms.append((time.perf_counter() - t) * 1000)

        reco_port, gw_port = _free_port(), _free_port()
        env = dict(
            os.environ,
            ATELIER_DATABASE_URL=url,
            ATELIER_MODELS_DIR=str(models_dir),
            ATELIER_MODEL_CHECK_INTERVAL_S="5",
            ATELIER_ENVIRONMENT="test",
            ATELIER_STORAGE_URL=f"file://{models_dir / 'blobs'}",
            ATELIER_RECOMMENDER_URL=f"http://127.0.0.1:{reco_port}",
            # Latency, not throttling, is measured: one key sends every request.
            ATELIER_RATE_LIMIT_KEY_RPS="0",
        )
        targets = {
            "recommender": (reco_port, "services.recommender.main:create_app", ROOT),
            "gateway": (gw_port, "services.gateway.main:create_app", ROOT),
        }
        if args.compare_tree:
            targets["recommender, --compare-tree"] = (
                _free_port(),
                "services.recommender.main:create_app",
                Path(args.compare_tree).resolve(),
            )
        for port, factory, tree in targets.values():
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "--factory",
                        factory,
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--log-level",
                        "warning",
                        "--no-access-log",
                    ],
                    # The tree's own code first on sys.path, ahead of the editable install.
                    env=dict(env, PYTHONPATH=str(tree)),
                    cwd=tree,
                )
            )
        http_ms: dict[str, list[float]] = {name: [] for name in targets}
        clients = {
            name: httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
            for name, (port, _, _) in targets.items()
        }
        try:
            for client in clients.values():
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        if client.get("/healthz").status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.2)
            headers = {
                name: {"Authorization": f"Bearer {api_key}"}
                if name == "gateway"
                else {TENANT_HEADER: tenant}
                for name in targets
            }
            paths = {
                name: "/v1/users/{}/recommendations"
                if name == "gateway"
                else "/internal/v1/users/{}/recommendations"
                for name in targets
            }
            for name, client in clients.items():
                for u in users[:50]:
                    client.get(
                        paths[name].format(u),
                        headers=_signed(name, paths[name].format(u), headers),
                    )
            # Rounds alternate the targets (and their order), so load from other work on the
            # machine falls on all of them alike.
            per_round = -(-len(users) // args.rounds)
            for rnd in range(args.rounds):
                chunk = users[rnd * per_round : (rnd + 1) * per_round]
                order = list(targets) if rnd % 2 == 0 else list(reversed(targets))
                for name in order:
                    client = clients[name]
                    for u in chunk:
                        t = time.perf_counter()
                        r = client.get(
                            paths[name].format(u) + "?limit=10",
                            headers=_signed(name, paths[name].format(u) + "?limit=10", headers),
                        )
                        http_ms[name].append((time.perf_counter() - t) * 1000)
                        assert r.status_code == 200, r.text
        finally:
            for client in clients.values():
                client.close()
        print(f"{'top-10 for a user':<52} latency")
        print(f"{'raw model scoring + top-k (in-process, no SQL)':<52} {percentiles(raw_ms)}")
        print(f"{'service call in-process (SQL fold-in, rows, why)':<52} {percentiles(inproc_ms)}")
        labels = {
            "recommender": "HTTP GET recommender /internal/v1/users/{id}/...",
            "gateway": "HTTP GET gateway /v1/users/{id}/... (auth+proxy)",
            "recommender, --compare-tree": "HTTP GET recommender of --compare-tree",
        }
        for name, ms in http_ms.items():
            print(f"{labels[name]:<52} {percentiles(ms)}")
        print(
            "target over HTTP: p50 < 5 ms, p99 < 20 ms (uvicorn, 1 process each, sequential "
            f"keep-alive requests by httpx); load average {_load()}"
        )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        cleanup.close()


if __name__ == "__main__":
    main()

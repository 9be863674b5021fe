"""Load with accounting: the whole suite under a mixed load at a fixed rate, then every accepted
write looked up in the database.

    .venv/bin/python -m bench.bench_load [--duration 300] [--rate 8] [--postgres]

Starts the suite as `make run` does (`atelier run`, no generator builds) on loopback ports of its
own, with a fresh SQLite file (or, with --postgres, a throw-away PostgreSQL database on
ATELIER_TEST_POSTGRES_URL) and a private Redis; creates a tenant and a key; seeds interactions
for a catalogue of bare items and trains the recommender on them, so recommendation requests go
through a model; then runs locust (bench/load/locustfile.py, one process, headless) for
--duration seconds at --rate requests per second in all: image and text uploads, interaction
batches with event ids, recommendations for users with events, item reads and lists. Once the
tagging queue is drained (bounded by --drain-timeout), it checks that every accepted item is
stored, every stored image tagged and every item ready, and every accepted event stored; it
prints latency per route (p50 and p99 of every request), error rates, the accounting and the
machine, and exits 1 when anything accepted was lost, anything answered 5xx, or an item was
left unprocessed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

# `python bench/bench_load.py` (make bench) as well as `python -m bench.bench_load`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.load.accounting import (
    Accounting,
    RouteStats,
    account,
    minute_medians,
    read_ledger,
    route_stats,
    summary,
    table,
    wait_drained,
)
from bench.load.mix import describe
from bench.machine import cpu_model
from shared.auth import create_api_key, create_tenant
from shared.config import CommonSettings
from shared.db.scratch import scratch_database
from shared.db.session import session_scope
from shared.model_versions import active_version
from suite.supervisor import SERVING_MODELS, free_port

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "bench" / "load" / "locustfile.py"
MODELS_DIR = Path(os.environ.get("ATELIER_MODELS_DIR", ROOT / "var" / "models"))
# Each serving model's int8 twin is linked into the run's models directory too.
LINKED_MODELS = tuple(n for m in SERVING_MODELS for n in (m, f"{m}_int8"))
SEED_EVENTS_PER_USER = 10


@dataclass
class LoadConfig:
    duration_s: float = 300.0
    rate: float = 8.0  # requests per second, all locust users together
    users: int = 0  # locust users sharing the rate; 0: two per request per second
    postgres: bool = False
    catalogue: int = 300  # bare items seeded with events (and 2/3 as many users)
    train: bool = True  # train the recommender on the seeded events before the load
    drain_timeout_s: float = 300.0
    seed: int = 0

    @property
    def n_users(self) -> int:
        return self.users or max(2, math.ceil(self.rate * 2))


@dataclass
class Report:
    config: LoadConfig
    stats: list[RouteStats]
    accounting: Accounting
    batches: int
    load_s: float
    drain_s: float
    jobs_left: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    load_during: list[float]  # 1-minute load average, sampled every 5 s during the load
    minute_p50: list[float]
    backend: str
    suite_errors: int
    tenant_id: str
    ledger: Path

    @property
    def server_errors(self) -> int:
        return next((s.server_errors for s in self.stats if s.route == "all"), 0)

    @property
    def ok(self) -> bool:
        return (
            self.accounting.lost == 0
            and self.server_errors == 0
            and self.accounting.unprocessed == 0
            and self.jobs_left == 0
        )

    def render(self) -> str:
        c = self.config

        def load(averages: tuple[float, float, float]) -> str:
            return "/".join(f"{x:.2f}" for x in averages)

        return "\n".join(
            [
                f"{self.backend}, {c.rate:g} req/s target over {self.load_s:.0f} s, "
                f"{c.n_users} locust users",
                describe(),
                table(self.stats, self.load_s),
                summary(self.accounting, self.batches),
                "p50 of all requests, minute by minute (ms): "
                + ", ".join(f"{m:.0f}" for m in self.minute_p50),
                f"drained in {self.drain_s:.1f} s after the load ({self.jobs_left} jobs left); "
                f"suite log: {self.suite_errors} tracebacks",
                f"machine: {cpu_model()}, {os.cpu_count()} cores, load average (1/5/15 min) "
                f"{load(self.load_before)} before, {load(self.load_after)} after, 1 min "
                f"{min(self.load_during, default=0):.2f}-{max(self.load_during, default=0):.2f}"
                " during the load",
                "OK: 0 lost, 0 5xx" if self.ok else "FAILED: see above",
            ]
        )


def _log(msg: str) -> None:
    print(f"[load] {msg}", file=sys.stderr, flush=True)


def ensure_models() -> None:
    missing = [m for m in SERVING_MODELS if active_version(MODELS_DIR, m) is None]
    if missing:
        _log(f"building {', '.join(missing)} into {MODELS_DIR}")
        subprocess.run(
            [sys.executable, "-m", "workers.training.build", "--models-dir", str(MODELS_DIR),
             *[a for m in missing for a in ("--only", m)]],
            cwd=ROOT, check=True,
        )  # fmt: skip


class Suite:
    """`atelier run --no-build-models` on free ports, its models linked into a private directory
    (the recommender's tenant models are written there, never into var/models)."""

    def __init__(self, var_dir: Path, db_url: str) -> None:
        models = var_dir / "models"
        models.mkdir(parents=True)
        for name in LINKED_MODELS:
            if (MODELS_DIR / name).is_dir():
                (models / name).symlink_to((MODELS_DIR / name).resolve())
        self.port, self.reco_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # No ATELIER_ or REDIS_URL variable of the caller's: a private Redis, as `make run`.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
        env.pop("REDIS_URL", None)
        env.pop("DATABASE_URL", None)
        env.update(
            ATELIER_DATABASE_URL=db_url, ATELIER_MODELS_DIR=str(models), PYTHONUNBUFFERED="1"
        )
        self.log_path = var_dir / "suite.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "suite.cli", "run", "--var-dir", str(var_dir),
             "--gateway-port", str(self.port), "--recommender-port", str(self.reco_port),
             "--no-build-models"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_ready(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"suite exited:\n{self.log_path.read_text()[-4000:]}")
            # Both services: the gateway's /readyz does not wait for the recommender, which
            # may still be starting, and a recommendation request then answers 503.
            urls = (f"{self.url}/readyz", f"http://127.0.0.1:{self.reco_port}/readyz")
            try:
                if all(httpx.get(u, timeout=5).status_code == 200 for u in urls):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"suite not ready in {timeout_s:g} s")

    def tracebacks(self) -> int:
        return self.log_path.read_text(errors="replace").count("Traceback (most recent call")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def new_key(db_url: str) -> tuple[str, str]:
    with session_scope(db_url) as s:
        tenant = create_tenant(s, name=f"load-{uuid.uuid4().hex[:8]}")
        _, key = create_api_key(s, tenant_id=tenant.id, scopes=["read", "write"])
        return tenant.id, key


def seed(client: httpx.Client, cfg: LoadConfig, ledger: Path, train_timeout_s: float) -> None:
    """Events of 2/3 * catalogue users over the catalogue's bare items, then a trained model."""
    rng = random.Random(cfg.seed)
    events = [
        {"user_id": f"user-{u}", "item_id": f"article-{rng.randrange(cfg.catalogue)}",
         "event_type": rng.choice(("view", "view", "click", "like")), "event_id": f"seed-{u}-{k}"}
        for u in range(cfg.catalogue * 2 // 3) for k in range(SEED_EVENTS_PER_USER)
    ]  # fmt: skip
    with ledger.open("a", encoding="utf-8") as out:
        for start in range(0, len(events), 1000):
            batch = events[start : start + 1000]
            r = client.post("/v1/interactions", json={"events": batch})
            r.raise_for_status()
            out.write(json.dumps({"t": "events", "ids": [e["event_id"] for e in batch]}) + "\n")
    if not cfg.train:
        return
    r = client.post("/v1/recommender/train", json={"budget_s": 10})
    r.raise_for_status()
    job_id = r.json()["job_id"]
    deadline = time.monotonic() + train_timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(1)
    if job["status"] != "succeeded":
        raise RuntimeError(f"recommender training did not succeed: {job}")
    # The recommender picks a new model up within model_check_interval_s (5 s).
    while time.monotonic() < deadline:
        reco = client.get("/v1/users/user-0/recommendations").raise_for_status().json()
        if reco.get("model_version"):
            return
        time.sleep(1)
    raise RuntimeError("the recommender never served the trained model")


class LoadSampler(threading.Thread):
    """The machine's 1-minute load average every 5 s: other work on a shared machine shows."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(5.0):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> None:
        self._done.set()
        self.join()


def run_locust(cfg: LoadConfig, url: str, key: str, ledger: Path, log: Path) -> float:
    env = dict(os.environ)
    env.update(
        ATELIER_LOAD_KEY=key,
        ATELIER_LOAD_RATE=str(cfg.rate),
        ATELIER_LOAD_USERS=str(cfg.n_users),
        ATELIER_LOAD_LEDGER=str(ledger),
        ATELIER_LOAD_SEED=str(cfg.seed),
        ATELIER_LOAD_CATALOGUE=str(cfg.catalogue),
    )
    start = time.monotonic()
    with log.open("wb") as out:
        subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
             "-u", str(cfg.n_users), "-r", str(cfg.n_users), "-t", f"{cfg.duration_s:g}s",
             "--host", url, "--stop-timeout", "60", "--only-summary", "--loglevel", "WARNING"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            timeout=cfg.duration_s + 180,
        )  # fmt: skip
    return time.monotonic() - start


def run_load(cfg: LoadConfig, workdir: Path) -> Report:
    ensure_models()
    load_before = os.getloadavg()
    with ExitStack() as stack:
        if cfg.postgres:
            db_url = stack.enter_context(scratch_database(prefix="atelier_load"))
            backend = "PostgreSQL"
        else:
            db_url = f"sqlite:///{workdir / 'atelier.db'}"
            backend = "SQLite"
        db_url = CommonSettings(database_url=db_url).sqlalchemy_url
        suite = Suite(workdir, db_url)
        stack.callback(suite.stop)
        _log(f"starting the suite ({backend}) in {workdir}")
        suite.wait_ready()
        tenant_id, key = new_key(db_url)
        ledger = workdir / "ledger.jsonl"
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=suite.url, headers=headers, timeout=60) as client:
            _log("seeding interactions" + (" and training the recommender" if cfg.train else ""))
            seed(client, cfg, ledger, train_timeout_s=300)
        _log(f"load: {cfg.rate:g} req/s for {cfg.duration_s:g} s, {cfg.n_users} users")
        sampler = LoadSampler()
        sampler.start()
        try:
            load_s = run_locust(cfg, suite.url, key, ledger, workdir / "locust.log")
        finally:
            sampler.stop()
        _log("waiting for the queues to drain")
        drain_s, left = wait_drained(db_url, tenant_id, cfg.drain_timeout_s)
        requests, accepted = read_ledger(ledger)
        acc = account(db_url, tenant_id, accepted)
        errors = suite.tracebacks()
    return Report(
        config=cfg,
        stats=route_stats(requests),
        accounting=acc,
        batches=accepted.batches,
        load_s=min(load_s, cfg.duration_s),
        drain_s=drain_s,
        jobs_left=left,
        load_before=load_before,
        load_after=os.getloadavg(),
        load_during=sampler.samples,
        minute_p50=minute_medians(requests),
        backend=backend,
        suite_errors=errors,
        tenant_id=tenant_id,
        ledger=ledger,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    p.add_argument("--rate", type=float, default=8.0, help="requests per second in all")
    p.add_argument("--users", type=int, default=0, help="locust users (default 2 x rate)")
    p.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    p.add_argument("--no-train", action="store_true", help="no recommender model before load")
    p.add_argument("--drain-timeout", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", type=Path, help="keep the suite's files (logs, ledger) here")
    args = p.parse_args(argv)
    cfg = LoadConfig(
        duration_s=args.duration,
        rate=args.rate,
        users=args.users,
        postgres=args.postgres,
        train=not args.no_train,
        drain_timeout_s=args.drain_timeout,
        seed=args.seed,
    )
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=False)
        report = run_load(cfg, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="atelier-load-") as tmp:
            report = run_load(cfg, Path(tmp))
    print(report.render())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

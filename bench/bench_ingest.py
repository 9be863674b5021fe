"""Interaction ingestion into PostgreSQL: our function and HTTP endpoint next to raw baselines.

    python -m bench.bench_ingest --events 50000 [--repeats 3] [--pg postgresql+psycopg://...]

Creates a throw-away database, then for each method a fresh tenant (so item creation is part of
every run), batches of 10,000 events (the API limit), and prints events/s: the median of
``--repeats`` rounds, each round running every method once in turn, so load from other work on
the machine falls on all of them alike. Baselines insert rows whose item ids are already
resolved, so they measure the table, not our work: ``COPY`` straight into ``interactions`` and
psycopg ``executemany``. "retry" re-sends the same batches (all duplicates by event_id), the
idempotent path a CMS hits after a timeout. "new items" sends events whose every item is unknown
(10,000 bare items created per batch, the catalogue growing from batch to batch).
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import uvicorn

from bench.synthetic_interactions import EVENT_TYPES, generate
from services.gateway.interactions import ingest, resolve_items
from services.gateway.main import create_app
from shared.auth import create_api_key, create_tenant
from shared.config import GatewaySettings
from shared.db.migrate import upgrade
from shared.db.scratch import DEFAULT_SERVER, libpq, scratch_database
from shared.db.session import session_scope
from shared.schemas.recommendations import DEFAULT_EVENT_WEIGHTS

BATCH = 10_000


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def make_events(n: int, seed: int = 0) -> list[dict[str, Any]]:
    data = generate(max(n // 20, 100), max(n // 25, 100), n, seed)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    return [
        {
            "user_id": f"u{u}",
            "item_id": f"i{i}",
            "event_type": EVENT_TYPES[e],
            "timestamp": (t0 + timedelta(seconds=float(t - data.timestamp[0]))).isoformat(),
            "event_id": f"ev-{k}",
        }
        for k, (u, i, e, t) in enumerate(
            zip(data.user, data.item, data.event, data.timestamp, strict=True)
        )
    ]


def batches(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [events[i : i + BATCH] for i in range(0, len(events), BATCH)]


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def new_tenant(url: str) -> tuple[str, str]:
    with session_scope(url) as s:
        t = create_tenant(s, name=f"bench-{uuid.uuid4().hex[:8]}")
        _, key = create_api_key(s, tenant_id=t.id, scopes=["read", "write"])
        return t.id, key


def raw_rows(url: str, tenant: str, events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    with session_scope(url) as s:
        items, _ = resolve_items(s, tenant_id=tenant, keys=(e["item_id"] for e in events))
        s.commit()
    return [
        (
            tenant,
            e["user_id"],
            items[e["item_id"]],
            e["event_type"],
            None,
            datetime.fromisoformat(e["timestamp"]),
            e["event_id"],
        )
        for e in events
    ]


COLS = "tenant_id, user_id, item_id, event_type, value, occurred_at, event_id"


def bench_copy(url: str, events: list[dict[str, Any]]) -> float:
    tenant, _ = new_tenant(url)
    rows = raw_rows(url, tenant, events)
    with psycopg.connect(libpq(url)) as conn:

        def run() -> None:
            for start in range(0, len(rows), BATCH):
                with conn.cursor() as cur, cur.copy(f"COPY interactions ({COLS}) FROM STDIN") as cp:
                    for row in rows[start : start + BATCH]:
                        cp.write_row(row)
                conn.commit()

        return len(rows) / timed(run)


def bench_executemany(url: str, events: list[dict[str, Any]]) -> float:
    tenant, _ = new_tenant(url)
    rows = raw_rows(url, tenant, events)
    sql = f"INSERT INTO interactions ({COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s)"
    sql += " ON CONFLICT DO NOTHING"
    with psycopg.connect(libpq(url)) as conn:

        def run() -> None:
            for start in range(0, len(rows), BATCH):
                with conn.cursor() as cur:
                    cur.executemany(sql, rows[start : start + BATCH])
                conn.commit()

        return len(rows) / timed(run)


def _ingest_all(url: str, tenant: str, chunks: list[list[dict[str, Any]]]) -> Callable[[], None]:
    def run() -> None:
        with session_scope(url) as s:
            for chunk in chunks:
                ingest(
                    s,
                    tenant_id=tenant,
                    raw_events=chunk,
                    event_weights=DEFAULT_EVENT_WEIGHTS,
                    max_events=BATCH,
                )

    return run


def bench_new_items(url: str, events: list[dict[str, Any]]) -> float:
    tenant, _ = new_tenant(url)
    fresh = [{**e, "item_id": f"n{k}", "event_id": None} for k, e in enumerate(events)]
    chunks = batches([{k: v for k, v in e.items() if v is not None} for e in fresh])
    return len(events) / timed(_ingest_all(url, tenant, chunks))


def bench_function(url: str, events: list[dict[str, Any]]) -> tuple[float, float]:
    tenant, _ = new_tenant(url)
    run = _ingest_all(url, tenant, batches(events))
    first = len(events) / timed(run)
    retry = len(events) / timed(run)
    return first, retry


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_http(url: str, events: list[dict[str, Any]]) -> tuple[float, float]:
    _, key = new_tenant(url)
    port = _free_port()
    app = create_app(GatewaySettings(database_url=url, environment="test"))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    chunks = batches(events)
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        ) as client:

            def run() -> None:
                for chunk in chunks:
                    r = client.post("/v1/interactions", json={"events": chunk})
                    r.raise_for_status()

            first = len(events) / timed(run)
            retry = len(events) / timed(run)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    return first, retry


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pg", default=DEFAULT_SERVER)
    args = parser.parse_args(argv)
    with scratch_database(args.pg, prefix="atelier_bench") as url:
        with psycopg.connect(libpq(url)) as conn:
            server_version = conn.info.server_version
        upgrade(url)
        events = make_events(args.events)
        print(
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
            f"Python {platform.python_version()}, PostgreSQL {server_version}, "
            f"psycopg {psycopg.__version__}; {len(events)} events in batches of {BATCH}, "
            f"{len({e['item_id'] for e in events})} items, "
            f"{len({e['user_id'] for e in events})} users; load average {_load()}"
        )
        rates: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            round_rates = {"copy": bench_copy(url, events), "many": bench_executemany(url, events)}
            round_rates["fn"], round_rates["fn_retry"] = bench_function(url, events)
            round_rates["http"], round_rates["http_retry"] = bench_http(url, events)
            round_rates["new_items"] = bench_new_items(url, events)
            for key, rate in round_rates.items():
                rates.setdefault(key, []).append(rate)
        copy = statistics.median(rates["copy"])
        print(f"{'method':<46} {'events/s':>10} {'vs COPY':>8}  rounds")
        for label, key in (
            ("raw COPY (ids pre-resolved, no checks)", "copy"),
            ("raw executemany ON CONFLICT (pre-resolved)", "many"),
            ("ingest() function: validate+items+COPY", "fn"),
            ("ingest() function, retried batch (all dups)", "fn_retry"),
            ("ingest() function, every item new", "new_items"),
            ("POST /v1/interactions over loopback HTTP", "http"),
            ("POST /v1/interactions, retried batch", "http_retry"),
        ):
            rate = statistics.median(rates[key])
            each = " ".join(f"{r / 1000:.1f}k" for r in rates[key])
            print(f"{label:<46} {rate:>10,.0f} {rate / copy:>8.2f}  {each}")
        print(
            "target: >= 20,000 events/s (Gorse: 1,000 feedback rows in 62 ms = 16,129/s); "
            f"load average {_load()}"
        )


if __name__ == "__main__":
    main()

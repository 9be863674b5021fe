"""What bench/bench_load.py reports: latency and errors per route from the locust ledger, and
whether every write the suite accepted is in the database once its queues are drained.

The ledger (bench/load/locustfile.py writes it) holds one JSON line per request (`req`), per
accepted upload (`item`: content id, kind) and per accepted interaction batch (`events`: the
event ids). An accepted write that the database does not hold afterwards is lost.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from shared.db.models import ContentItem, ContentStatus, Interaction, Job, JobStatus, Tag
from shared.db.session import session_scope

UNFINISHED = (JobStatus.queued.value, JobStatus.running.value)


@dataclass
class Accepted:
    """The writes the suite answered 2xx (or 409 for an upload an earlier attempt stored)."""

    items: dict[str, str] = field(default_factory=dict)  # content id -> kind
    events: set[str] = field(default_factory=set)
    batches: int = 0

    def add_events(self, ids: Iterable[str]) -> None:
        self.events.update(ids)
        self.batches += 1


@dataclass(frozen=True)
class RouteStats:
    route: str
    count: int
    p50_ms: float
    p99_ms: float
    errors: int  # answers other than 2xx (409 of a retried upload included), and no answer
    server_errors: int  # 5xx
    no_answer: int  # connection refused or reset, timeout


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q% of the values at or below it."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def read_ledger(path: Path) -> tuple[list[dict[str, Any]], Accepted]:
    requests: list[dict[str, Any]] = []
    accepted = Accepted()
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec["t"] == "req":
            requests.append(rec)
        elif rec["t"] == "item":
            accepted.items[rec["id"]] = rec["kind"]
        elif rec["t"] == "events":
            accepted.add_events(rec["ids"])
    return requests, accepted


def route_stats(requests: list[dict[str, Any]]) -> list[RouteStats]:
    by_route: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in requests:
        by_route[r["route"]].append(r)
    by_route["all"] = list(requests)
    out = []
    for route, recs in by_route.items():
        ms = sorted(float(r["ms"]) for r in recs)
        out.append(
            RouteStats(
                route=route,
                count=len(recs),
                p50_ms=percentile(ms, 50),
                p99_ms=percentile(ms, 99),
                errors=sum(1 for r in recs if not 200 <= r["status"] < 300),
                server_errors=sum(1 for r in recs if r["status"] >= 500),
                no_answer=sum(1 for r in recs if r["status"] == 0),
            )
        )
    return sorted(out, key=lambda s: (s.route == "all", s.route))


def minute_medians(requests: list[dict[str, Any]]) -> list[float]:
    """The median of every request, minute by minute of the load: flat when the rate holds."""
    if not requests:
        return []
    t0 = min(r["at"] for r in requests)
    minutes: dict[int, list[float]] = defaultdict(list)
    for r in requests:
        minutes[int((r["at"] - t0) // 60)].append(float(r["ms"]))
    return [percentile(sorted(minutes[m]), 50) for m in sorted(minutes)]


def unfinished_jobs(db_url: str, tenant_id: str) -> int:
    with session_scope(db_url) as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.tenant_id == tenant_id, Job.status.in_(UNFINISHED))
            )
            or 0
        )


def wait_drained(db_url: str, tenant_id: str, timeout_s: float) -> tuple[float, int]:
    """Wait until the tenant has no queued or running job; (seconds waited, jobs left)."""
    start = time.monotonic()
    while True:
        left = unfinished_jobs(db_url, tenant_id)
        waited = time.monotonic() - start
        if left == 0 or waited >= timeout_s:
            return waited, left
        time.sleep(1.0)


@dataclass
class Accounting:
    items_accepted: int
    items_missing: list[str]
    images: int
    images_untagged: list[str]  # stored image items without a tag once the jobs finished
    not_ready: list[str]  # stored items whose status is not `ready`
    duplicates: int  # images marked as a near-duplicate of an earlier one (still tagged)
    events_accepted: int
    events_missing: list[str]
    events_stored_total: int  # the tenant's events in the database, accepted or not
    jobs: dict[str, int]  # the tenant's jobs by status

    @property
    def lost(self) -> int:
        return len(self.items_missing) + len(self.events_missing)

    @property
    def unprocessed(self) -> int:
        return len(self.images_untagged) + len(self.not_ready)


def account(db_url: str, tenant_id: str, accepted: Accepted) -> Accounting:
    with session_scope(db_url) as s:
        rows = s.execute(
            select(ContentItem.id, ContentItem.status, ContentItem.duplicate_of).where(
                ContentItem.tenant_id == tenant_id
            )
        ).all()
        stored = {r.id: r for r in rows}
        tagged = set(s.scalars(select(Tag.content_id).where(Tag.tenant_id == tenant_id)))
        event_ids = set(
            s.scalars(
                select(Interaction.event_id).where(
                    Interaction.tenant_id == tenant_id, Interaction.event_id.is_not(None)
                )
            )
        )
        events_total = s.scalar(
            select(func.count()).select_from(Interaction).where(Interaction.tenant_id == tenant_id)
        )
        jobs = dict(
            s.execute(
                select(Job.status, func.count())
                .where(Job.tenant_id == tenant_id)
                .group_by(Job.status)
            ).all()
        )
    ours = [(cid, kind) for cid, kind in accepted.items.items() if cid in stored]
    images = [cid for cid, kind in accepted.items.items() if kind == "image"]
    return Accounting(
        items_accepted=len(accepted.items),
        items_missing=sorted(cid for cid in accepted.items if cid not in stored),
        images=len(images),
        images_untagged=sorted(cid for cid in images if cid in stored and cid not in tagged),
        not_ready=sorted(cid for cid, _ in ours if stored[cid].status != ContentStatus.ready.value),
        duplicates=sum(1 for cid, _ in ours if stored[cid].duplicate_of is not None),
        events_accepted=len(accepted.events),
        events_missing=sorted(accepted.events - event_ids),
        events_stored_total=int(events_total or 0),
        jobs={str(k): int(v) for k, v in jobs.items()},
    )


def table(stats: list[RouteStats], duration_s: float) -> str:
    head = (
        f"{'route':<38}{'requests':>9}{'req/s':>7}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'5xx':>5}"
    )
    lines = [head]
    for st in stats:
        rate = st.errors / st.count if st.count else 0.0
        lines.append(
            f"{st.route:<38}{st.count:>9,}{st.count / duration_s:>7.2f}{st.p50_ms:>9.1f}"
            f"{st.p99_ms:>9.1f}{rate:>8.2%}{st.server_errors:>5}"
        )
    return "\n".join(lines)


def summary(acc: Accounting, batches: int) -> str:
    texts = acc.items_accepted - acc.images
    ok_images = acc.images - len(acc.images_untagged)
    return "\n".join(
        [
            f"accepted: {acc.items_accepted:,} items ({acc.images:,} images, {texts:,} texts), "
            f"{acc.events_accepted:,} events in {batches:,} batches",
            f"stored:   {acc.items_accepted - len(acc.items_missing):,} items "
            f"({ok_images:,}/{acc.images:,} images tagged, {len(acc.not_ready)} not ready, "
            f"{acc.duplicates} marked near-duplicate), "
            f"{acc.events_accepted - len(acc.events_missing):,} events "
            f"({acc.events_stored_total:,} in the tenant's table)",
            f"jobs:     {', '.join(f'{k} {v:,}' for k, v in sorted(acc.jobs.items()))}",
            f"lost:     {acc.lost} ({len(acc.items_missing)} items, "
            f"{len(acc.events_missing)} events)",
        ]
    )

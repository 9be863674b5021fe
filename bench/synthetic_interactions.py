"""Synthetic, skewed interaction logs with planted structure.

Items have power-law popularity, a taste cluster and a release time after which their appeal
fades; users have log-normal activity and a primary plus a secondary cluster. Most events follow
taste; the rest follow global popularity and are far more often dislikes. Events are spread over
`days` so a time-based split sees new items and shifting popularity, as in production.

    python -m bench.synthetic_interactions --users 5000 --items 2000 --events 200000 out.csv
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.recommender.ranking.data import DEFAULT_EVENT_WEIGHTS, SECONDS_PER_DAY, Interactions

EVENT_TYPES: tuple[str, ...] = ("view", "like", "share", "purchase", "dislike")
EVENT_VALUES = np.array([DEFAULT_EVENT_WEIGHTS[e] for e in EVENT_TYPES], dtype=np.float32)
# Taste-driven events are mostly positive; popularity-driven ones (a user clicking what is
# trending outside their taste) carry most dislikes.
TASTE_EVENT_P = np.array([0.70, 0.18, 0.05, 0.05, 0.02])
GLOBAL_EVENT_P = np.array([0.75, 0.05, 0.01, 0.01, 0.18])
START_TIME = 1_700_000_000.0


@dataclass(frozen=True)
class SyntheticData:
    n_users: int
    n_items: int
    user: np.ndarray
    item: np.ndarray
    event: np.ndarray
    value: np.ndarray
    timestamp: np.ndarray
    user_cluster: np.ndarray
    item_cluster: np.ndarray

    def to_interactions(self) -> Interactions:
        return Interactions(
            user_ids=[f"u{i}" for i in range(self.n_users)],
            item_ids=[f"i{i}" for i in range(self.n_items)],
            user_idx=self.user.astype(np.int32),
            item_idx=self.item.astype(np.int32),
            weight=self.value.astype(np.float32),
            timestamp=self.timestamp.astype(np.float64),
        )

    def write_csv(self, path: Path | str) -> None:
        with open(path, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["user", "item", "value", "timestamp"])
            for u, i, v, t in zip(
                self.user.tolist(),
                self.item.tolist(),
                self.value.tolist(),
                self.timestamp.tolist(),
                strict=True,
            ):
                out.writerow([f"u{u}", f"i{i}", f"{v:g}", f"{t:.0f}"])


def generate(
    n_users: int,
    n_items: int,
    n_events: int,
    seed: int = 0,
    *,
    n_clusters: int | None = None,
    taste: float = 0.8,
    popularity_exponent: float = 0.9,
    days: float = 180.0,
    periods: int = 12,
) -> SyntheticData:
    rng = np.random.default_rng(seed)
    n_clusters = n_clusters or int(np.clip(n_items // 60, 4, 60))

    item_cluster = rng.integers(n_clusters, size=n_items)
    ranks = rng.permutation(n_items)
    popularity = 1.0 / (ranks + 1.0) ** popularity_exponent
    backlog = rng.random(n_items) < 0.4
    release = np.where(backlog, 0.0, rng.uniform(0.0, days, size=n_items))

    activity = rng.lognormal(0.0, 1.2, size=n_users)
    user_cluster = rng.integers(n_clusters, size=n_users)
    second_cluster = rng.integers(n_clusters, size=n_users)

    user = rng.choice(n_users, size=n_events, p=activity / activity.sum())
    t_days = rng.uniform(0.0, days, size=n_events)
    period = np.minimum((t_days / days * periods).astype(np.int64), periods - 1)
    draw = rng.random(n_events)
    cluster = np.where(
        draw < taste * 0.8,
        user_cluster[user],
        np.where(draw < taste, second_cluster[user], -1),
    )

    cluster_items = [np.flatnonzero(item_cluster == c) for c in range(n_clusters)]
    item = np.empty(n_events, dtype=np.int64)
    key = period * (n_clusters + 1) + (cluster + 1)
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    for group in np.split(order, bounds):
        p_idx, c = divmod(int(key[group[0]]), n_clusters + 1)
        c -= 1
        mid_day = (p_idx + 0.5) * days / periods
        candidates = np.arange(n_items) if c < 0 else cluster_items[c]
        age = mid_day - release[candidates]
        # New items get a burst of attention that fades over about two weeks.
        appeal = np.where(age >= 0, 0.25 + np.exp(-np.maximum(age, 0) / 14.0), 0.0)
        w = popularity[candidates] * appeal
        if w.sum() == 0:
            w = popularity[candidates]
        item[group] = rng.choice(candidates, size=len(group), p=w / w.sum())
        # Events before an item's release are moved to just after it.
        t_days[group] = np.maximum(t_days[group], release[item[group]])

    event = np.empty(n_events, dtype=np.int8)
    from_taste = cluster >= 0
    event[from_taste] = rng.choice(len(EVENT_TYPES), size=int(from_taste.sum()), p=TASTE_EVENT_P)
    event[~from_taste] = rng.choice(
        len(EVENT_TYPES), size=int((~from_taste).sum()), p=GLOBAL_EVENT_P
    )

    time_order = np.argsort(t_days, kind="stable")
    return SyntheticData(
        n_users=n_users,
        n_items=n_items,
        user=user[time_order].astype(np.int32),
        item=item[time_order].astype(np.int32),
        event=event[time_order],
        value=EVENT_VALUES[event[time_order]],
        timestamp=START_TIME + t_days[time_order] * SECONDS_PER_DAY,
        user_cluster=user_cluster,
        item_cluster=item_cluster,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="CSV path (user,item,value,timestamp)")
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    generate(args.users, args.items, args.events, args.seed).write_csv(args.out)


if __name__ == "__main__":
    main()

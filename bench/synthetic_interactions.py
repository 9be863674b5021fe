"""Synthetic, skewed interaction logs with planted structure.

Items have power-law popularity, a taste cluster and a release time after which their appeal
fades; users have log-normal activity and a primary plus a secondary cluster. Most events follow
taste; the rest follow global popularity and are far more often dislikes. Events are spread over
`days` so a time-based split sees new items and shifting popularity, as in production.

Two more shapes that the public sets lack, returned as (users, items, values, timestamps) like
`bench.datasets.load`: `bursty` (each user seen in one short session at a random time within a
year) and `counts_no_time` (aggregated play counts, heavy-tailed, with no usable time).

    python -m bench.synthetic_interactions --users 5000 --items 2000 --events 200000 out.csv
    python -m bench.synthetic_interactions --shape bursty out.csv
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ranking.data import SECONDS_PER_DAY, Interactions
from shared.schemas.recommendations import DEFAULT_EVENT_WEIGHTS

EVENT_TYPES: tuple[str, ...] = ("view", "like", "share", "purchase", "dislike")
EVENT_VALUES = np.array([DEFAULT_EVENT_WEIGHTS[e] for e in EVENT_TYPES], dtype=np.float32)
# Taste-driven events are mostly positive; popularity-driven ones (a user clicking what is
# trending outside their taste) carry most dislikes.
TASTE_EVENT_P = np.array([0.70, 0.18, 0.05, 0.05, 0.02])
GLOBAL_EVENT_P = np.array([0.75, 0.05, 0.01, 0.01, 0.18])
START_TIME = 1_700_000_000.0

# (users, items, values, timestamps or None): the shape bench.datasets.load returns.
Shaped = tuple[NDArray[np.str_], NDArray[np.str_], NDArray[np.float32], NDArray[np.float64] | None]


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


@dataclass(frozen=True)
class _Taste:
    """Zipf-like item popularity, item taste clusters and each user's two favourite clusters."""

    popularity: np.ndarray
    item_cluster: np.ndarray
    user_cluster: np.ndarray
    second_cluster: np.ndarray
    cluster_items: list[np.ndarray]


def _taste(
    rng: np.random.Generator,
    n_users: int,
    n_items: int,
    n_clusters: int | None,
    popularity_exponent: float,
) -> _Taste:
    n_clusters = n_clusters or int(np.clip(n_items // 60, 4, 60))
    item_cluster = rng.integers(n_clusters, size=n_items)
    ranks = rng.permutation(n_items)
    return _Taste(
        popularity=1.0 / (ranks + 1.0) ** popularity_exponent,
        item_cluster=item_cluster,
        user_cluster=rng.integers(n_clusters, size=n_users),
        second_cluster=rng.integers(n_clusters, size=n_users),
        cluster_items=[np.flatnonzero(item_cluster == c) for c in range(n_clusters)],
    )


def _pick_clusters(
    rng: np.random.Generator, t: _Taste, user: np.ndarray, taste: float
) -> np.ndarray:
    """Per event: the user's main cluster, their second one, or -1 (global popularity)."""
    draw = rng.random(len(user))
    return np.where(
        draw < taste * 0.8,
        t.user_cluster[user],
        np.where(draw < taste, t.second_cluster[user], -1),
    )


def _draw_items(rng: np.random.Generator, t: _Taste, cluster: np.ndarray) -> np.ndarray:
    item = np.empty(len(cluster), dtype=np.int64)
    everything = np.arange(len(t.popularity))
    for c in np.unique(cluster).tolist():
        mask = cluster == c
        candidates = everything if c < 0 else t.cluster_items[c]
        if len(candidates) == 0:  # a cluster no item landed in (tiny catalogues)
            candidates = everything
        w = t.popularity[candidates]
        item[mask] = rng.choice(candidates, size=int(mask.sum()), p=w / w.sum())
    return item


def _ids(prefix: str, idx: np.ndarray) -> NDArray[np.str_]:
    return np.char.add(prefix, idx.astype(np.int64).astype(str))


def bursty(
    n_users: int = 2000,
    n_items: int = 1000,
    n_events: int = 40_000,
    seed: int = 0,
    *,
    n_clusters: int | None = None,
    taste: float = 0.8,
    popularity_exponent: float = 0.9,
    days: float = 365.0,
    mean_gap_s: float = 30.0,
    max_burst_s: float = 3600.0,
) -> Shaped:
    """Each user is seen once: one session burst at a random time within `days`.

    Every user has at least one event (log-normal activity on top); inside a burst events are
    `1 + Exp(mean_gap_s - 1)` seconds apart, and a burst longer than `max_burst_s` is squeezed
    to fit. Items follow the users' taste clusters (share `taste`) or global Zipf-like
    popularity; values are event weights as in `generate`. Sorted by time.
    """
    if n_events < n_users:
        raise ValueError("bursty needs n_events >= n_users (every user has a session)")
    if mean_gap_s <= 1.0:
        raise ValueError("mean_gap_s must be above 1 second")
    rng = np.random.default_rng(seed)
    t = _taste(rng, n_users, n_items, n_clusters, popularity_exponent)

    activity = rng.lognormal(0.0, 1.0, size=n_users)
    per_user = 1 + rng.multinomial(n_events - n_users, activity / activity.sum())
    user = np.repeat(np.arange(n_users), per_user)
    first = np.cumsum(per_user) - per_user
    gaps = 1.0 + rng.exponential(mean_gap_s - 1.0, size=n_events)
    gaps[first] = 0.0
    offset = np.cumsum(gaps)
    offset -= np.repeat(offset[first], per_user)
    span = offset[first + per_user - 1]
    offset *= np.repeat(np.minimum(1.0, max_burst_s / np.maximum(span, 1e-9)), per_user)
    start = rng.uniform(0.0, max(days * SECONDS_PER_DAY - max_burst_s, 0.0), size=n_users)
    timestamp = START_TIME + start[user] + offset

    cluster = _pick_clusters(rng, t, user, taste)
    item = _draw_items(rng, t, cluster)
    from_taste = cluster >= 0
    event = np.where(
        from_taste,
        rng.choice(len(EVENT_TYPES), size=n_events, p=TASTE_EVENT_P),
        rng.choice(len(EVENT_TYPES), size=n_events, p=GLOBAL_EVENT_P),
    )
    order = np.argsort(timestamp, kind="stable")
    return (
        _ids("u", user[order]),
        _ids("i", item[order]),
        EVENT_VALUES[event[order]],
        timestamp[order].astype(np.float64),
    )


def counts_no_time(
    n_users: int = 1900,
    n_items: int = 17_600,
    n_pairs: int = 92_000,
    seed: int = 0,
    *,
    n_clusters: int | None = None,
    taste: float = 0.8,
    popularity_exponent: float = 0.8,
    timestamp: float | None = None,
) -> Shaped:
    """Aggregated play counts per (user, item), Last.fm-like, with no usable time.

    `n_pairs` distinct pairs (fewer only if the draws cannot find that many), sorted by user
    then item; values are heavy-tailed play counts (median in the hundreds, the top ones tens
    of thousands), higher for items in the user's taste clusters. Timestamps are None, or all
    equal to `timestamp` when given (an import time, as such data arrives).
    """
    if n_pairs > n_users * n_items // 2:
        raise ValueError("n_pairs is more than half of all (user, item) pairs")
    rng = np.random.default_rng(seed)
    t = _taste(rng, n_users, n_items, n_clusters, popularity_exponent)

    activity = rng.lognormal(0.0, 0.6, size=n_users)
    p_user = activity / activity.sum()
    keys = np.empty(0, dtype=np.int64)
    for _ in range(20):
        if len(keys) >= n_pairs:
            break
        need = int((n_pairs - len(keys)) * 1.2) + 16
        user = rng.choice(n_users, size=need, p=p_user)
        item = _draw_items(rng, t, _pick_clusters(rng, t, user, taste))
        keys = np.unique(np.concatenate([keys, user.astype(np.int64) * n_items + item]))
    if len(keys) > n_pairs:
        keys = np.sort(rng.choice(keys, size=n_pairs, replace=False))
    user, item = np.divmod(keys, n_items)

    in_taste = (t.item_cluster[item] == t.user_cluster[user]) | (
        t.item_cluster[item] == t.second_cluster[user]
    )
    listener = rng.lognormal(0.0, 0.8, size=n_users)
    plays = rng.lognormal(5.3, 1.1, size=len(keys)) * listener[user] * np.where(in_taste, 2, 0.5)
    values = np.maximum(1.0, np.round(plays)).astype(np.float32)
    times = None if timestamp is None else np.full(len(keys), float(timestamp), dtype=np.float64)
    return _ids("u", user), _ids("i", item), values, times


def write_shaped_csv(data: Shaped, path: Path | str) -> None:
    users, items, values, timestamps = data
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["user", "item", "value"] + ([] if timestamps is None else ["timestamp"]))
        for k in range(len(users)):
            row = [str(users[k]), str(items[k]), f"{values[k]:g}"]
            if timestamps is not None:
                row.append(f"{timestamps[k]:.0f}")
            out.writerow(row)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="CSV path (user,item,value[,timestamp])")
    parser.add_argument("--shape", choices=("logs", "bursty", "counts"), default="logs")
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--events", type=int, default=200_000, help="events (pairs for counts)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.shape == "bursty":
        write_shaped_csv(bursty(args.users, args.items, args.events, args.seed), args.out)
    elif args.shape == "counts":
        write_shaped_csv(counts_no_time(args.users, args.items, args.events, args.seed), args.out)
    else:
        generate(args.users, args.items, args.events, args.seed).write_csv(args.out)


if __name__ == "__main__":
    main()

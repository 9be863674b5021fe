"""Interaction logs and the user x item matrix the models train on."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

# The API's event types and their default weights: one definition, so an event the API accepts
# (`rating`) is never one that training refuses.
from shared.schemas.recommendations import DEFAULT_EVENT_WEIGHTS

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Event:
    user: str
    item: str
    timestamp: float
    event: str = "view"
    value: float = 1.0


@dataclass(frozen=True)
class Interactions:
    """An event log with ids mapped to dense indices; one array entry per event.

    `weight` is already signed (a dislike is negative); `timestamp` is in seconds.
    """

    user_ids: list[str]
    item_ids: list[str]
    user_idx: np.ndarray
    item_idx: np.ndarray
    weight: np.ndarray
    timestamp: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.user_idx)
        if not (len(self.item_idx) == len(self.weight) == len(self.timestamp) == n):
            raise ValueError("event arrays must have the same length")

    def __len__(self) -> int:
        return len(self.user_idx)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def subset(self, mask: np.ndarray) -> Interactions:
        """Same id vocabularies, fewer events: indices stay comparable across splits."""
        return Interactions(
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            user_idx=self.user_idx[mask],
            item_idx=self.item_idx[mask],
            weight=self.weight[mask],
            timestamp=self.timestamp[mask],
        )

    @classmethod
    def from_events(
        cls,
        events: Iterable[Event],
        *,
        event_weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS,
    ) -> Interactions:
        """Unknown event types raise: silently weighting them 0 hides integration bugs."""
        users: dict[str, int] = {}
        items: dict[str, int] = {}
        u_idx: list[int] = []
        i_idx: list[int] = []
        weights: list[float] = []
        times: list[float] = []
        for ev in events:
            try:
                w = event_weights[ev.event]
            except KeyError:
                raise ValueError(f"no weight configured for event type {ev.event!r}") from None
            u_idx.append(users.setdefault(ev.user, len(users)))
            i_idx.append(items.setdefault(ev.item, len(items)))
            weights.append(w * ev.value)
            times.append(ev.timestamp)
        return cls(
            user_ids=list(users),
            item_ids=list(items),
            user_idx=np.asarray(u_idx, dtype=np.int32),
            item_idx=np.asarray(i_idx, dtype=np.int32),
            weight=np.asarray(weights, dtype=np.float32),
            timestamp=np.asarray(times, dtype=np.float64),
        )

    @classmethod
    def from_arrays(
        cls,
        users: np.ndarray,
        items: np.ndarray,
        weight: np.ndarray,
        timestamp: np.ndarray,
    ) -> Interactions:
        """Build from parallel arrays of raw ids (any hashable values, stored as str)."""
        user_ids, user_idx = np.unique(np.asarray(users).astype(str), return_inverse=True)
        item_ids, item_idx = np.unique(np.asarray(items).astype(str), return_inverse=True)
        return cls(
            user_ids=user_ids.tolist(),
            item_ids=item_ids.tolist(),
            user_idx=user_idx.astype(np.int32),
            item_idx=item_idx.astype(np.int32),
            weight=np.asarray(weight, dtype=np.float32),
            timestamp=np.asarray(timestamp, dtype=np.float64),
        )

    @classmethod
    def read_csv(cls, path: Path | str) -> Interactions:
        """Read `user,item,value[,timestamp]` (header optional); value is the signed weight.

        A missing or empty timestamp (aggregated counts carry none) reads as 0: evaluation then
        holds out a seeded random share of each user's events."""
        users: list[str] = []
        items: list[str] = []
        values: list[float] = []
        times: list[float] = []
        with open(path, newline="") as fh:
            for row in csv.reader(fh):
                if not row or row[0] == "user":
                    continue
                users.append(row[0])
                items.append(row[1])
                values.append(float(row[2]))
                times.append(float(row[3]) if len(row) > 3 and row[3].strip() else 0.0)
        return cls.from_arrays(
            np.asarray(users), np.asarray(items), np.asarray(values), np.asarray(times)
        )


class InteractionMatrix(NamedTuple):
    """`X` holds positive totals only; `excluded` marks (user, item) pairs whose total was
    negative, so serving can keep disliked items out of recommendations."""

    X: sp.csr_matrix
    user_index: dict[str, int]
    item_index: dict[str, int]
    excluded: sp.csr_matrix


def decay_factors(
    timestamp: np.ndarray, *, half_life_days: float | None, now: float | None
) -> np.ndarray:
    if half_life_days is None:
        return np.ones(len(timestamp), dtype=np.float32)
    if half_life_days <= 0:
        raise ValueError("half_life_days must be positive")
    ref = float(timestamp.max()) if now is None and len(timestamp) else float(now or 0.0)
    # Events "from the future" (clock skew between CMS and us) count as fresh, not amplified.
    age_days = np.maximum(ref - timestamp, 0.0) / SECONDS_PER_DAY
    return np.exp2(-age_days / half_life_days).astype(np.float32)


def build_matrix(
    events: Interactions | Iterable[Event],
    *,
    event_weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS,
    half_life_days: float | None = None,
    now: float | None = None,
) -> InteractionMatrix:
    """Sum (optionally time-decayed) weights per (user, item) into a users x items CSR matrix.

    `now` defaults to the newest event, so rebuilding from the same log is reproducible.
    `event_weights` only applies to `Event` iterables; `Interactions` carry their weights.
    """
    inter = (
        events
        if isinstance(events, Interactions)
        else Interactions.from_events(events, event_weights=event_weights)
    )
    w = inter.weight * decay_factors(inter.timestamp, half_life_days=half_life_days, now=now)
    shape = (inter.n_users, inter.n_items)
    # COO -> CSR sums duplicates, which is exactly the per-pair total we want.
    total = sp.csr_matrix(
        (w.astype(np.float32), (inter.user_idx, inter.item_idx)), shape=shape, dtype=np.float32
    )
    total.sum_duplicates()
    excluded = (total < 0).astype(np.float32).tocsr()
    positive = total.multiply(total > 0).tocsr().astype(np.float32)
    positive.eliminate_zeros()
    positive.sort_indices()
    return InteractionMatrix(
        X=positive,
        user_index={u: i for i, u in enumerate(inter.user_ids)},
        item_index={it: i for i, it in enumerate(inter.item_ids)},
        excluded=excluded,
    )


# How a (user, item) total becomes the number a model trains on. Play counts run to tens of
# thousands, so raw totals let a few heavy listeners dominate; `log1p` keeps order and damps
# scale; `binary` keeps only "interacted". Chosen per model on validation.
VALUE_TRANSFORMS: tuple[str, ...] = ("raw", "log1p", "binary")


def transform_values(X: sp.csr_matrix, transform: str) -> sp.csr_matrix:
    """Apply a value transform to the stored (positive) entries of a CSR matrix."""
    if transform == "raw":
        return X
    out = X.copy()
    if transform == "log1p":
        out.data = np.log1p(out.data).astype(np.float32)
    elif transform == "binary":
        out.data = np.ones_like(out.data, dtype=np.float32)
    else:
        raise ValueError(f"unknown value transform {transform!r}")
    return out


def user_row(
    item_weights: Mapping[int, float] | Iterable[tuple[int, float]], n_items: int
) -> sp.csr_matrix:
    """A 1 x items row for request-time fold-in of a user's latest interactions."""
    pairs = list(item_weights.items() if isinstance(item_weights, Mapping) else item_weights)
    cols = np.fromiter((p[0] for p in pairs), dtype=np.int32, count=len(pairs))
    vals = np.fromiter((p[1] for p in pairs), dtype=np.float32, count=len(pairs))
    row = sp.csr_matrix((vals, (np.zeros_like(cols), cols)), shape=(1, n_items))
    row.sum_duplicates()
    return row.multiply(row > 0).tocsr().astype(np.float32)

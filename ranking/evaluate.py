"""Offline evaluation: per-user holdouts, ranking metrics and bootstrap confidence intervals.

Model selection uses a per-user holdout (`per_user_split`): each user with enough events keeps
their latest fraction of events apart. A global time cut (`time_split`, kept for reports) looks
more like serving, but on real data most users are active in one burst, so a cut leaves a
handful of users on one side of it (18 validation users on a movie-ratings set) and nothing at
all when every event carries the same time; a per-user holdout evaluates every active user
whatever the shape of the timestamps. Ties in time (or no time at all) are broken by a seeded
shuffle, which makes the holdout random per user when timestamps carry no order.

Targets are the items a user interacted with positively in the held-out part and had not seen
(or disliked) before it; items unknown to the training part are dropped from the targets, as no
collaborative model can rank them (cold items are the job of trending/content lists).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from ranking.base import Recommender, top_k
from ranking.data import Interactions, build_matrix

K = 10
# Dense (users x items) score blocks are capped at this many cells to bound memory.
MAX_BLOCK_CELLS = 8_000_000


@dataclass(frozen=True)
class Split:
    train: Interactions
    test: Interactions
    cut: float


def time_split(inter: Interactions, *, test_fraction: float = 0.1) -> Split:
    """Global time cut: the newest `test_fraction` of events form the test window."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be in (0, 1)")
    cut = float(np.quantile(inter.timestamp, 1.0 - test_fraction))
    before = inter.timestamp < cut
    return Split(train=inter.subset(before), test=inter.subset(~before), cut=cut)


def per_user_split(
    inter: Interactions,
    *,
    test_fraction: float = 0.2,
    min_events: int = 5,
    seed: int = 0,
) -> Split:
    """Each user's latest `test_fraction` of events (at least one) is the test; users with
    fewer than `min_events` events are training only. Equal timestamps are ordered by a seeded
    shuffle."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be in (0, 1)")
    n = len(inter)
    # Sort by user, then time, then a seeded tie-break (lexsort: last key is primary).
    order = np.lexsort((_tie_break(inter, seed), inter.timestamp, inter.user_idx))
    users = inter.user_idx[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if n else np.zeros(0, int)
    counts = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, counts)
    size = np.repeat(counts, counts)
    n_test = np.maximum(1, np.floor(size * test_fraction)).astype(np.int64)
    is_test_sorted = (size >= min_events) & (rank >= size - n_test)
    is_test = np.zeros(n, dtype=bool)
    is_test[order] = is_test_sorted
    train = inter.subset(~is_test)
    cut = float(train.timestamp.max()) if len(train) else 0.0
    return Split(train=train, test=inter.subset(is_test), cut=cut)


def _stable_hash(ids: list[str], seed: int) -> np.ndarray:
    return np.array([zlib.crc32(f"{seed}:{x}".encode()) for x in ids], dtype=np.uint64)


def _tie_break(inter: Interactions, seed: int) -> np.ndarray:
    """A seeded pseudo-random key per event that depends on its user and item ids only, not
    on the order the events were read in: the SQL store and a CSV file give the same split."""
    mixed: np.ndarray = _stable_hash(inter.user_ids, seed)[inter.user_idx] * np.uint64(
        0x9E3779B97F4A7C15
    )
    mixed ^= _stable_hash(inter.item_ids, seed + 1)[inter.item_idx]
    # splitmix64's finaliser spreads the combined bits.
    mixed ^= mixed >> np.uint64(31)
    mixed *= np.uint64(0xBF58476D1CE4E5B9)
    mixed ^= mixed >> np.uint64(29)
    return mixed


@dataclass(frozen=True)
class Holdout:
    X_train: sp.csr_matrix
    excluded: sp.csr_matrix
    targets: sp.csr_matrix
    users: np.ndarray

    @property
    def n_items(self) -> int:
        return int(self.X_train.shape[1])


def make_holdout(
    split: Split,
    *,
    half_life_days: float | None = None,
    max_users: int | None = None,
    seed: int = 0,
) -> Holdout:
    train = build_matrix(split.train, half_life_days=half_life_days, now=split.cut)
    test = build_matrix(split.test).X
    known_items = np.asarray(train.X.sum(axis=0)).ravel() > 0
    seen = ((train.X + train.excluded) > 0).astype(np.float32)
    targets = (test > 0).astype(np.float32)
    targets = (targets - targets.multiply(seen)).tocsr()
    targets = targets @ sp.diags(known_items.astype(np.float32))
    targets = sp.csr_matrix(targets)
    targets.eliminate_zeros()
    has_history = np.diff(train.X.indptr) > 0
    users = np.flatnonzero(has_history & (np.diff(targets.indptr) > 0))
    if max_users is not None and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    return Holdout(X_train=train.X, excluded=train.excluded, targets=targets, users=users)


BOOTSTRAP_SAMPLES = 1000


def bootstrap_ci(
    values: np.ndarray, *, samples: int = BOOTSTRAP_SAMPLES, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-user values."""
    if len(values) == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (samples, len(values)))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Metrics:
    ndcg: float
    recall: float
    map: float
    hit_rate: float
    coverage: float
    fit_s: float
    users: int
    ndcg_lo: float = 0.0
    ndcg_hi: float = 0.0
    # Per evaluated user, in `Holdout.users` order: what paired comparisons resample.
    per_user: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)

    def as_dict(self) -> dict[str, float | list[float]]:
        return {
            "ndcg": self.ndcg,
            "ndcg_ci95": [self.ndcg_lo, self.ndcg_hi],
            "recall": self.recall,
            "map": self.map,
            "hit_rate": self.hit_rate,
            "coverage": self.coverage,
            "fit_s": self.fit_s,
            "users": self.users,
        }


ScoreFn = Callable[[sp.csr_matrix], np.ndarray]
VariantsFn = Callable[[sp.csr_matrix], Iterable[np.ndarray]]


def evaluate_variants(
    variants: VariantsFn, n_variants: int, holdout: Holdout, *, k: int = K
) -> list[Metrics]:
    """Metrics of several rankings at once: `variants` maps a block of training rows to one
    dense score array per variant, lazily (a blend's weight vectors share their members'
    scores, and only one combined array exists at a time)."""
    n_items = holdout.n_items
    users = holdout.users
    if len(users) == 0:
        return [Metrics(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0) for _ in range(n_variants)]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])
    block = max(1, min(1024, MAX_BLOCK_CELLS // max(n_items, 1)))
    per = np.zeros((n_variants, 4, len(users)))  # ndcg, recall, ap, hit
    recommended = np.zeros((n_variants, n_items), dtype=bool)
    for start in range(0, len(users), block):
        batch = users[start : start + block]
        part = slice(start, start + len(batch))
        rows = holdout.X_train[batch]
        exclude = rows + holdout.excluded[batch]
        target_rows = holdout.targets[batch]
        targets = target_rows.toarray()
        n_rel = np.minimum(np.diff(target_rows.indptr), k)
        for v, scores in enumerate(variants(rows)):
            idx, vals = top_k(scores, k, exclude=exclude)
            recommended[v, idx[np.isfinite(vals)]] = True
            hit = np.take_along_axis(targets, idx, axis=1) > 0
            hit &= np.isfinite(vals)
            precision_at = np.cumsum(hit, axis=1) / np.arange(1, idx.shape[1] + 1)
            per[v, 0, part] = (hit @ discounts[: idx.shape[1]]) / ideal[n_rel]
            per[v, 1, part] = hit.sum(axis=1) / n_rel
            per[v, 2, part] = (precision_at * hit).sum(axis=1) / n_rel
            per[v, 3, part] = hit.any(axis=1)
    out = []
    for v in range(n_variants):
        lo, hi = bootstrap_ci(per[v, 0])
        ndcg, recall, ap, hits = per[v].mean(axis=1)
        out.append(
            Metrics(
                ndcg=float(ndcg),
                recall=float(recall),
                map=float(ap),
                hit_rate=float(hits),
                coverage=float(recommended[v].sum()) / n_items,
                fit_s=0.0,
                users=len(users),
                ndcg_lo=lo,
                ndcg_hi=hi,
                per_user=per[v, 0].copy(),
            )
        )
    return out


def evaluate_scores(score: ScoreFn, holdout: Holdout, *, k: int = K, fit_s: float = 0.0) -> Metrics:
    """Rank all items except the user's training items for every evaluated user; `score` maps
    a block of training rows to dense scores."""
    (m,) = evaluate_variants(lambda rows: [score(rows)], 1, holdout, k=k)
    return replace(m, fit_s=fit_s)


def evaluate(model: Recommender, holdout: Holdout, *, k: int = K, fit_s: float = 0.0) -> Metrics:
    return evaluate_scores(model.score_users, holdout, k=k, fit_s=fit_s)


# The cut-offs of the curves a model version records (NDCG and recall against k).
CURVE_KS = (1, 2, 5, 10, 20, 50)


def ranking_curve(
    model: Recommender, holdout: Holdout, ks: Sequence[int] = CURVE_KS
) -> dict[str, list[float]]:
    """Mean NDCG@k and recall@k (hits / min(relevant, k), as ``evaluate``) for each k, from one
    top-max(k) ranking per user: the points of the evaluation plots."""
    users = holdout.users
    k_max = max(ks)
    sums = np.zeros((2, len(ks)))
    if len(users) == 0:
        return {"k": list(ks), "ndcg": [0.0] * len(ks), "recall": [0.0] * len(ks)}
    discounts = 1.0 / np.log2(np.arange(2, k_max + 2))
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])
    block = max(1, min(1024, MAX_BLOCK_CELLS // max(holdout.n_items, 1)))
    for start in range(0, len(users), block):
        batch = users[start : start + block]
        rows = holdout.X_train[batch]
        target_rows = holdout.targets[batch]
        targets = target_rows.toarray()
        relevant = np.diff(target_rows.indptr)
        idx, vals = top_k(model.score_users(rows), k_max, exclude=rows + holdout.excluded[batch])
        hit = (np.take_along_axis(targets, idx, axis=1) > 0) & np.isfinite(vals)
        gains = np.cumsum(hit * discounts[: idx.shape[1]], axis=1)
        found = np.cumsum(hit, axis=1)
        for j, k in enumerate(ks):
            col = min(k, idx.shape[1]) - 1
            n_rel = np.minimum(relevant, k)
            sums[0, j] += (gains[:, col] / ideal[n_rel]).sum()
            sums[1, j] += (found[:, col] / n_rel).sum()
    means = sums / len(users)
    return {"k": list(ks), "ndcg": means[0].tolist(), "recall": means[1].tolist()}


def paired_difference_ci(
    a: Metrics, b: Metrics, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 1
) -> tuple[float, float]:
    """Bootstrap interval of mean(NDCG a - NDCG b) over the same users."""
    return bootstrap_ci(a.per_user - b.per_user, samples=samples, seed=seed)


def fit_and_evaluate(model: Recommender, holdout: Holdout, *, k: int = K) -> Metrics:
    start = time.perf_counter()
    model.fit(holdout.X_train)
    return evaluate(model, holdout, k=k, fit_s=time.perf_counter() - start)


def format_table(rows: list[tuple[str, Metrics]], *, title: str = "") -> str:
    header = f"{'model':<44} {'NDCG@10':>8} {'95% CI':>15} {'Recall@10':>9} {'MAP@10':>7} "
    header += f"{'HR@10':>6} {'coverage':>8} {'fit s':>7}"
    lines = [title] if title else []
    lines += [header, "-" * len(header)]
    for name, m in rows:
        lines.append(
            f"{name:<44} {m.ndcg:>8.4f} {f'{m.ndcg_lo:.4f}-{m.ndcg_hi:.4f}':>15} "
            f"{m.recall:>9.4f} {m.map:>7.4f} {m.hit_rate:>6.3f} {m.coverage:>8.3f} {m.fit_s:>7.2f}"
        )
    return "\n".join(lines)

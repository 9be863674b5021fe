"""Offline evaluation with a time-based holdout.

We split with one global time cut, not per-user "last n": everything before the cut trains,
what users do after it is the test. That is what serving faces ("what happens next"): the model
never sees interactions, item popularity or new items from after the moment it would have been
trained, which a per-user leave-last-out split leaks (another user's later events end up in
training). Validation for tuning is carved from the training part with a second cut, so the
test window is never looked at while choosing hyper-parameters.

Targets are the items a user interacted with positively after the cut and had not seen (or
disliked) before it; items unknown before the cut are dropped from the targets, as no
collaborative model can rank them (cold items are the job of trending/content lists).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp

from services.recommender.ranking.data import Interactions, build_matrix
from services.recommender.ranking.models import Recommender, top_k

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


@dataclass(frozen=True)
class Holdout:
    X_train: sp.csr_matrix
    excluded: sp.csr_matrix
    targets: sp.csr_matrix
    users: np.ndarray

    @property
    def n_items(self) -> int:
        return self.X_train.shape[1]


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


@dataclass(frozen=True)
class Metrics:
    ndcg: float
    recall: float
    map: float
    hit_rate: float
    coverage: float
    fit_s: float
    users: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def evaluate(model: Recommender, holdout: Holdout, *, k: int = K, fit_s: float = 0.0) -> Metrics:
    """Rank all items except the user's training items for every evaluated user."""
    n_items = holdout.n_items
    users = holdout.users
    if len(users) == 0:
        return Metrics(0.0, 0.0, 0.0, 0.0, 0.0, fit_s, 0)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])
    block = max(1, min(1024, MAX_BLOCK_CELLS // max(n_items, 1)))
    ndcg = recall = ap = hits_any = 0.0
    recommended = np.zeros(n_items, dtype=bool)
    for start in range(0, len(users), block):
        batch = users[start : start + block]
        rows = holdout.X_train[batch]
        scores = model.score_users(rows)
        idx, vals = top_k(scores, k, exclude=rows + holdout.excluded[batch])
        recommended[idx[np.isfinite(vals)]] = True
        target_rows = holdout.targets[batch]
        hit = np.take_along_axis(target_rows.toarray(), idx, axis=1) > 0
        hit &= np.isfinite(vals)
        n_rel = np.minimum(np.diff(target_rows.indptr), k)
        ndcg += float(((hit @ discounts[: idx.shape[1]]) / ideal[n_rel]).sum())
        recall += float((hit.sum(axis=1) / n_rel).sum())
        precision_at = np.cumsum(hit, axis=1) / np.arange(1, idx.shape[1] + 1)
        ap += float(((precision_at * hit).sum(axis=1) / n_rel).sum())
        hits_any += float(hit.any(axis=1).sum())
    n = len(users)
    return Metrics(
        ndcg=ndcg / n,
        recall=recall / n,
        map=ap / n,
        hit_rate=hits_any / n,
        coverage=float(recommended.sum()) / n_items,
        fit_s=fit_s,
        users=n,
    )


def fit_and_evaluate(model: Recommender, holdout: Holdout, *, k: int = K) -> Metrics:
    start = time.perf_counter()
    model.fit(holdout.X_train)
    return evaluate(model, holdout, k=k, fit_s=time.perf_counter() - start)


def format_table(rows: list[tuple[str, Metrics]], *, title: str = "") -> str:
    header = f"{'model':<40} {'NDCG@10':>8} {'Recall@10':>9} {'MAP@10':>7} {'HR@10':>6} "
    header += f"{'coverage':>8} {'fit s':>7}"
    lines = [title] if title else []
    lines += [header, "-" * len(header)]
    for name, m in rows:
        lines.append(
            f"{name:<40} {m.ndcg:>8.4f} {m.recall:>9.4f} {m.map:>7.4f} {m.hit_rate:>6.3f} "
            f"{m.coverage:>8.3f} {m.fit_s:>7.2f}"
        )
    return "\n".join(lines)

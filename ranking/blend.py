"""A weighted blend of fitted recommenders, and the search for its weights on validation.

Members' scores live on different scales (EASE weights, random-walk probabilities, factor dot
products), so each member's scores are divided by their standard deviation per user before they
are weighted; items a member cannot score (EASE outside its modelled items) take that user's
lowest score. Subtracting each member's mean as well (a z-score) would add one constant per user
and change no ranking, so serving skips it: it is two fewer passes over every item per request.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ranking.base import Recommender
from ranking.evaluate import Holdout, Metrics, evaluate_variants


def _row_scale(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`scores` with non-finite entries set to the row's lowest finite score (a new array only
    when there are any), and 1 / the per-row standard deviation."""
    if not np.isfinite(scores).all():
        finite = np.isfinite(scores)
        low = np.where(finite, scores, np.inf).min(axis=1, keepdims=True)
        low[~np.isfinite(low)] = 0.0
        scores = np.where(finite, scores, low).astype(np.float32)
    n = scores.shape[1]
    total = scores.sum(axis=1, dtype=np.float64)
    squares = np.einsum("ij,ij->i", scores, scores, dtype=np.float64)
    std = np.sqrt(np.maximum(squares / n - (total / n) ** 2, 0.0))
    inv = np.divide(1.0, std, out=np.ones_like(std), where=std > 0).astype(np.float32)
    return scores, inv


def scaled(scores: np.ndarray) -> np.ndarray:
    """Scores divided by their per-row standard deviation (non-finite ones first set to the
    row's lowest finite score). A new array; `scores` is left as it is."""
    filled, inv = _row_scale(np.asarray(scores, dtype=np.float32))
    out: np.ndarray = filled * inv[:, None]
    return out


class Blend(Recommender):
    name = "blend"

    def __init__(self, weights: list[float], members: list[dict[str, Any]]) -> None:
        if len(weights) != len(members) or not members:
            raise ValueError("a blend needs one weight per member")
        self.weights = [float(w) for w in weights]
        self.members: list[Recommender] = [Recommender.from_description(m) for m in members]

    @classmethod
    def of(cls, members: list[Recommender], weights: list[float]) -> Blend:
        """A blend of already fitted (or unfitted) member objects."""
        blend = cls(weights, [m.describe() for m in members])
        blend.members = list(members)
        if all(m.n_items for m in members):
            blend.n_items = members[0].n_items
        return blend

    @property
    def cost(self) -> int:  # type: ignore[override]
        return sum(m.cost for m in self.members)

    def params(self) -> dict[str, Any]:
        return {"weights": self.weights, "members": [m.describe() for m in self.members]}

    def clone(self) -> Blend:
        return Blend.of([m.clone() for m in self.members], self.weights)

    def _fit(self, X: sp.csr_matrix) -> None:
        for m in self.members:
            m.fit(X)

    def _score(self, rows: sp.csr_matrix) -> np.ndarray:
        # Scaled in place: every model's score_users returns a fresh array, and on a large
        # catalogue each extra pass over the items is a measurable share of a request.
        total: np.ndarray | None = None
        for w, m in zip(self.weights, self.members, strict=True):
            if not w:
                continue
            part, inv = _row_scale(np.asarray(m.score_users(rows), dtype=np.float32))
            part *= (w * inv)[:, None]
            total = part if total is None else np.add(total, part, out=total)
        if total is None:
            return np.zeros((rows.shape[0], self.n_items), dtype=np.float32)
        return total

    def _item_similarities(self, item_idx: int) -> np.ndarray:
        total = np.zeros(self.n_items, dtype=np.float32)
        for w, m in zip(self.weights, self.members, strict=True):
            if w:
                total += w * scaled(m._item_similarities(item_idx)[None, :])[0]
        return total

    def pair_similarity(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        total = np.zeros((len(rows), len(cols)), dtype=np.float32)
        for w, m in zip(self.weights, self.members, strict=True):
            sims = m.pair_similarity(rows, cols)
            scale = float(np.abs(sims).max()) if sims.size else 0.0
            if w and scale > 0:
                total += w * sims / scale
        return total

    # Members persist in sub-directories; the blend's own arrays are empty.
    def _arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        return None

    def _save_arrays(self, directory: Path) -> None:
        for i, m in enumerate(self.members):
            m.save(directory / f"member-{i}")

    def _load_arrays(self, directory: Path) -> None:
        self.members = [
            Recommender.load(directory / f"member-{i}") for i in range(len(self.weights))
        ]


def weight_grid(n_members: int, step: float) -> list[tuple[float, ...]]:
    """Every weight vector on the simplex with the given step, each member alone first."""
    units = round(1 / step)
    out = [
        tuple(c / units for c in combo)
        for combo in itertools.product(range(units + 1), repeat=n_members)
        if sum(combo) == units
    ]
    return sorted(out, key=lambda w: -max(w))


def tune_weights(
    members: list[Recommender], holdout: Holdout, *, step: float = 0.1
) -> tuple[list[float], Metrics, list[tuple[tuple[float, ...], float]]]:
    """The weights with the best validation NDCG among `weight_grid`, members fitted on the
    holdout's training rows. The grid holds every member alone, so the blend's validation
    NDCG is never below its best member's."""
    grid = weight_grid(len(members), step)

    def variants(rows: sp.csr_matrix) -> Iterator[np.ndarray]:
        parts = [scaled(m.score_users(rows)) for m in members]
        for weights in grid:
            total = np.zeros_like(parts[0])
            for w, s in zip(weights, parts, strict=True):
                if w:
                    total += w * s
            yield total

    start = time.perf_counter()
    metrics = evaluate_variants(variants, len(grid), holdout)
    best = max(range(len(grid)), key=lambda i: metrics[i].ndcg)
    best_m = replace(metrics[best], fit_s=time.perf_counter() - start)
    return list(grid[best]), best_m, [(w, m.ndcg) for w, m in zip(grid, metrics, strict=True)]

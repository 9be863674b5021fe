"""Candidate models and how their hyper-parameters are searched, scaled to the data.

Each candidate starts from a prior point and walks one axis at a time along a ladder of values
(coordinate ascent on validation NDCG): a step that helps is followed by another in the same
direction, and the walk ends when no single step helps. The value transform is one of the axes,
since the best transform depends on the model (ALS wants damped counts as confidence, random
walks want binary edges).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from services.recommender.ranking.base import Recommender
from services.recommender.ranking.data import transform_values
from services.recommender.ranking.models import MODELS

# EASE costs O(items^3): seconds at 5-8k items, minutes at 15k, on one core. Above this many
# items it models the most popular ones only.
EASE_MAX_ITEMS = 8_000
DEFAULT_CANDIDATES = ("ease", "rp3beta", "als", "itemknn")


@dataclass(frozen=True)
class Point:
    model: str
    params: dict[str, Any] = field(hash=False)
    transform: str = "raw"

    def key(self) -> tuple[Any, ...]:
        return (self.model, self.transform, tuple(sorted(self.params.items())))

    def build(self) -> Recommender:
        return MODELS[self.model](**self.params).with_transform(self.transform)

    def label(self) -> str:
        short = ",".join(f"{k}={_fmt(v)}" for k, v in self.params.items() if k in _SHOWN)
        return f"{self.model}[{self.transform}]({short})"

    def moved(self, axis: str, ladder: Sequence[Any], direction: int) -> Point | None:
        """One rung up or down `ladder` on `axis`; None past either end."""
        current = self.transform if axis == "transform" else self.params[axis]
        i = _nearest(ladder, current) + direction
        if not 0 <= i < len(ladder):
            return None
        if axis == "transform":
            return replace(self, transform=ladder[i])
        return replace(self, params={**self.params, axis: ladder[i]})


_SHOWN = {"lam", "alpha", "beta", "k", "factors", "regularization", "shrink", "learning_rate"}


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _nearest(ladder: Sequence[Any], value: Any) -> int:
    if value in ladder:
        return list(ladder).index(value)
    # Ladders are roughly geometric and may start at 0: compare on a log1p scale.
    return int(np.argmin([abs(np.log1p(float(v)) - np.log1p(float(value))) for v in ladder]))


def value_transforms(X: sp.csr_matrix) -> tuple[str, ...]:
    """The transforms worth trying on these values, most likely first."""
    data = X.data
    if len(data) == 0 or np.all(data == data[0]):
        return ("raw",)  # one value everywhere: every transform ranks alike
    if float(np.percentile(data, 99)) > 20:
        return ("log1p", "binary", "raw")  # counts: heavy tails
    return ("raw", "binary", "log1p")  # ratings, likes


Axes = dict[str, Sequence[Any]]


def search_space(name: str, X: sp.csr_matrix, transforms: tuple[str, ...]) -> tuple[Point, Axes]:
    """Where a candidate's search starts on the training matrix `X` (raw totals), and its axes."""
    first = transforms[0]
    binary = "binary" if "binary" in transforms else first
    if name == "ease":
        # lambda is relative to the items' squared mass (the Gram matrix's mean diagonal).
        masses = [_mean_item_mass(transform_values(X, tr)) for tr in transforms]
        ladder = [round(min(masses) * 2.0**e, 3) for e in range(-2, 16)]
        start = Point("ease", {"lam": 10 * masses[0], "max_items": EASE_MAX_ITEMS}, first)
        start = replace(
            start, params={**start.params, "lam": ladder[_nearest(ladder, 10 * masses[0])]}
        )
        return start, {"lam": ladder, "transform": transforms}
    if name == "rp3beta":
        start = Point("rp3beta", {"alpha": 0.75, "beta": 0.3, "k": 200}, binary)
        return start, {
            "beta": (0.0, 0.15, 0.3, 0.45, 0.6, 0.75),
            "alpha": (0.25, 0.5, 0.75, 1.0, 1.25),
            "k": (50, 100, 200, 400, 800),
            "transform": transforms,
        }
    if name == "als":
        start = Point(
            "als", {"factors": 128, "regularization": 30.0, "alpha": 3.0, "iterations": 15}, first
        )
        return start, {
            "regularization": (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0),
            "alpha": (0.3, 1.0, 3.0, 10.0, 30.0),
            "factors": (32, 64, 128, 256, 512),
            "transform": transforms,
        }
    if name == "itemknn":
        start = Point("itemknn", {"k": 100, "shrink": 10.0}, first)
        return start, {
            "k": (10, 20, 50, 100, 200, 500),
            "shrink": (0.0, 5.0, 20.0, 50.0, 200.0),
            "transform": transforms,
        }
    if name == "bpr":
        start = Point("bpr", {"factors": 64, "learning_rate": 0.01}, binary)
        return start, {"learning_rate": (0.003, 0.01, 0.03, 0.1), "factors": (32, 64, 128)}
    if name == "puresvd":
        return Point("puresvd", {"rank": 64}, first), {"rank": (16, 32, 64, 128, 256)}
    raise ValueError(f"unknown candidate model {name!r}")


Search = Generator[Point, float, None]


def coordinate_search(start: Point, axes: Axes) -> Search:
    """Yields points to evaluate and receives each one's validation score."""
    seen: set[tuple[Any, ...]] = {start.key()}
    best, best_score = start, (yield start)
    improved = True
    while improved:
        improved = False
        for axis, ladder in axes.items():
            if len(ladder) < 2:
                continue
            for direction in (1, -1):
                while (nxt := best.moved(axis, ladder, direction)) is not None:
                    if nxt.key() in seen:
                        break
                    seen.add(nxt.key())
                    score = yield nxt
                    if score <= best_score:
                        break
                    best, best_score, improved = nxt, score, True


def fixed_points(points: Sequence[Point]) -> Search:
    """Evaluate a given list of points in order (tests, explicit grids)."""
    for p in points:  # noqa: UP028 - `yield from` a list iterator cannot receive `send`
        yield p


def _mean_item_mass(X: sp.csr_matrix) -> float:
    mass = np.asarray(X.multiply(X).sum(axis=0)).ravel()
    mass = mass[mass > 0]
    return float(mass.mean()) if len(mass) else 1.0

"""Candidate models and how their hyper-parameters are searched, scaled to the data.

Each candidate starts from a prior point and walks one axis at a time along a ladder of values
(coordinate ascent on validation NDCG): a step that helps is followed by another in the same
direction, and the walk ends when no single step helps. Each value transform gets a start of its
own, since the best transform depends on the model (ALS wants damped counts as confidence,
random walks want binary edges) and the best regularisation depends on the transform.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from ranking.base import Recommender
from ranking.data import transform_values
from ranking.models import MODELS

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


Axes = Mapping[str, Sequence[Any]]


@dataclass(frozen=True)
class Space:
    """A coarse grid (evaluated first, best prior guesses first) and the ladders walked by
    coordinate ascent from the best grid point. The grid spans what a user tuning the library
    by hand would try, so the search never ends below that on validation."""

    grid: list[Point]
    axes: Axes


def _product(model: str, prior: dict[str, Any], coarse: Axes, transform: str) -> list[Point]:
    """Every combination of the coarse values, nearest the prior first."""
    keys = list(coarse)
    combos = [
        dict(zip(keys, values, strict=True)) for values in itertools.product(*coarse.values())
    ]

    def distance(params: dict[str, Any]) -> int:
        return sum(
            abs(_nearest(coarse[k], params[k]) - _nearest(coarse[k], prior[k])) for k in keys
        )

    combos.sort(key=distance)
    return [Point(model, {**prior, **c}, transform) for c in combos]


def _interleave(*lists: list[Point]) -> list[Point]:
    out = []
    for group in itertools.zip_longest(*lists):
        out += [p for p in group if p is not None]
    return out


def search_space(name: str, X: sp.csr_matrix, transforms: tuple[str, ...]) -> Space:
    """The search for one candidate on the training matrix `X` (raw totals)."""
    first, rest = transforms[0], transforms[1:]
    if name == "ease":
        # lambda relative to each transform's squared item mass (the Gram matrix's diagonal),
        # since a regularisation that suits counts is far off for binary data.
        masses = {tr: _mean_item_mass(transform_values(X, tr)) for tr in transforms}
        ladder = [round(min(masses.values()) * 2.0**e, 3) for e in range(-2, 20)]
        per_transform = [
            [
                Point(
                    "ease",
                    {"lam": ladder[_nearest(ladder, r * masses[tr])], "max_items": EASE_MAX_ITEMS},
                    tr,
                )
                for r in (8.0, 2.0, 32.0, 0.5, 128.0)
            ]
            for tr in transforms
        ]
        return Space(_interleave(*per_transform), {"lam": ladder})
    if name == "rp3beta":
        prior = {"alpha": 0.75, "beta": 0.25, "k": 200}
        coarse = {"alpha": (0.5, 0.75, 1.0), "beta": (0.0, 0.25, 0.5, 0.75)}
        grid = _product("rp3beta", prior, coarse, "binary" if "binary" in transforms else first)
        grid += [Point("rp3beta", prior, tr) for tr in transforms if tr != "binary"]
        axes = {
            "beta": (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875),
            "alpha": (0.25, 0.5, 0.625, 0.75, 0.875, 1.0, 1.25),
            "k": (50, 100, 200, 400, 800),
        }
        return Space(grid, axes)
    if name == "als":
        # Every request reads the whole item-factor matrix (items x factors floats): on large
        # catalogues that read is most of the request, so the factor count is capped there.
        ladder = [f for f in (32, 64, 128, 256, 512) if f <= _max_factors(X.shape[1])]
        prior = {
            "factors": min(128, ladder[-1]),
            "regularization": 10.0,
            "alpha": 1.0,
            "iterations": 15,
        }
        coarse = {
            "factors": tuple(f for f in (64, 128, 256) if f in ladder),
            "regularization": (0.1, 1.0, 10.0, 50.0),
            "alpha": (1.0, 10.0),
        }
        small = {"regularization": (1.0, 10.0, 50.0), "alpha": (1.0, 10.0)}
        grid = _interleave(
            _product("als", prior, coarse, first),
            *[_product("als", prior, small, tr) for tr in rest],
        )
        axes = {
            "regularization": (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0),
            "alpha": (0.3, 1.0, 3.0, 10.0, 30.0, 100.0),
            "factors": tuple(ladder),
        }
        return Space(grid, axes)
    if name == "itemknn":
        prior = {"k": 100, "shrink": 10.0}
        coarse = {"k": (20, 50, 100, 200, 500), "shrink": (0.0, 10.0, 50.0)}
        grid = _interleave(
            _product("itemknn", prior, coarse, first),
            *[_product("itemknn", prior, {"k": (50, 200)}, tr) for tr in rest],
        )
        return Space(
            grid,
            {"k": (10, 20, 50, 100, 200, 500, 1000), "shrink": (0.0, 5.0, 10.0, 20.0, 50.0, 200.0)},
        )
    if name == "bpr":
        prior = {"factors": 64, "learning_rate": 0.01, "regularization": 0.01}
        coarse = {
            "factors": (64, 128),
            "learning_rate": (0.01, 0.05),
            "regularization": (0.01, 0.001),
        }
        grid = _product("bpr", prior, coarse, "binary" if "binary" in transforms else first)
        return Space(grid, {"learning_rate": (0.003, 0.01, 0.03, 0.1)})
    if name == "puresvd":
        return Space([Point("puresvd", {"rank": r}, first) for r in (64, 32, 128, 16, 256)], {})
    raise ValueError(f"unknown candidate model {name!r}")


Search = Generator[Point, float, None]


def grid_then_refine(space: Space) -> Search:
    """Evaluate the grid, then walk the axes from its best point."""
    seen: set[tuple[Any, ...]] = set()
    best: Point | None = None
    best_score = -np.inf
    for point in space.grid:
        if point.key() in seen:
            continue
        seen.add(point.key())
        score = yield point
        if score > best_score:
            best, best_score = point, score
    if best is not None and space.axes:
        yield from coordinate_search(best, space.axes, seen, best_score)


def coordinate_search(
    start: Point,
    axes: Axes,
    seen: set[tuple[Any, ...]] | None = None,
    start_score: float | None = None,
) -> Search:
    """Yields points to evaluate and receives each one's validation score (the start's too,
    unless `start_score` is given)."""
    seen = set() if seen is None else seen
    seen.add(start.key())
    best, best_score = start, (yield start) if start_score is None else start_score
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


# Above this many items ALS keeps at most 64 factors (a 64-factor matrix of 30k items is 7.7 MB).
LARGE_CATALOGUE_ITEMS = 30_000


def _max_factors(n_items: int) -> int:
    return 64 if n_items > LARGE_CATALOGUE_ITEMS else 512


def _mean_item_mass(X: sp.csr_matrix) -> float:
    mass = np.asarray(X.multiply(X).sum(axis=0)).ravel()
    mass = mass[mass > 0]
    return float(mass.mean()) if len(mass) else 1.0

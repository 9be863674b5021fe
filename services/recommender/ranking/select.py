"""Tune candidates on a validation split, pick the best by NDCG@10, refit it on all data."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from threadpoolctl import threadpool_limits

from services.recommender.ranking.data import InteractionMatrix, Interactions, build_matrix
from services.recommender.ranking.evaluate import (
    Holdout,
    Metrics,
    fit_and_evaluate,
    format_table,
    make_holdout,
    time_split,
)
from services.recommender.ranking.models import MODELS, Popularity, Recommender

# Small grids of the few parameters that matter, best prior guess first: when the budget runs
# out, the remaining (less likely) points are skipped.
DEFAULT_GRIDS: dict[str, list[dict[str, Any]]] = {
    "ease": [{"lam": lam} for lam in (1000.0, 300.0, 3000.0, 100.0, 10000.0)],
    # implicit's default regularisation (0.01) loses on ranking; 5-50 wins (NOTES.md).
    "als": [
        {"factors": f, "regularization": r}
        for f, r in ((64, 10.0), (64, 30.0), (128, 30.0), (64, 3.0), (32, 10.0), (128, 100.0))
    ],
    "itemknn": [{"k": k} for k in (100, 50, 200, 20, 500)],
    "bpr": [
        {"factors": f, "learning_rate": lr}
        for f, lr in ((64, 0.01), (64, 0.05), (128, 0.01), (32, 0.01))
    ],
    "puresvd": [{"rank": r} for r in (64, 32, 128, 16, 256)],
}

# EASE costs O(items^3): 8-31 s at 5-8k items, 170 s at 15k (NOTES.md).
EASE_MAX_ITEMS = 10_000


def default_candidates(n_items: int) -> list[str]:
    names = ["als", "itemknn", "bpr", "puresvd"]
    return (["ease", *names]) if n_items <= EASE_MAX_ITEMS else names


@dataclass
class CandidateReport:
    name: str
    params: dict[str, Any]
    validation: Metrics
    test: Metrics | None = None
    tried: list[tuple[dict[str, Any], float]] = field(default_factory=list)


@dataclass
class Selection:
    model: Recommender
    fallback: Popularity
    matrix: InteractionMatrix
    best: str
    candidates: list[CandidateReport]
    refit_s: float = 0.0

    def table(self) -> str:
        val = [(_label(c), c.validation) for c in self.candidates]
        out = [format_table(val, title="validation (tuning split)")]
        test = [(_label(c), c.test) for c in self.candidates if c.test is not None]
        if test:
            out.append(format_table(test, title="test (time holdout, after tuning)"))
        out.append(
            f"selected: {self.best} {self.model.params()}; "
            f"refit on all data in {self.refit_s:.2f} s"
        )
        return "\n\n".join(out)


def _label(c: CandidateReport) -> str:
    short = ",".join(f"{k}={v}" for k, v in c.params.items() if k in _TUNED.get(c.name, ()))
    return f"{c.name}({short})" if short else c.name


_TUNED = {name: tuple(grid[0]) for name, grid in DEFAULT_GRIDS.items()}


def train_and_select(
    interactions: Interactions,
    *,
    candidates: Sequence[str] | None = None,
    grids: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    peers: Mapping[str, Recommender] | None = None,
    budget_s: float = 300.0,
    test_fraction: float = 0.1,
    validation_fraction: float = 0.1,
    half_life_days: float | None = None,
    max_eval_users: int | None = 5000,
    evaluate_test: bool = True,
    blas_threads: int = 1,
) -> Selection:
    """Tune, select and refit.

    The tuning budget is spent round-robin over the candidates' grids, so every candidate is
    tried at least once however small the budget. `peers` are untuned models (e.g. library
    defaults) reported next to the candidates but never selected. Popularity is always fitted,
    as the baseline and as the fallback for users with no history.
    """
    grids = {**DEFAULT_GRIDS, **(grids or {})}
    names = list(candidates) if candidates is not None else default_candidates(interactions.n_items)
    if not names:
        raise ValueError("no candidate models to select from")
    unknown = [n for n in names if n not in MODELS or n == "popularity"]
    if unknown:
        raise ValueError(f"unknown candidate models: {unknown}")

    with threadpool_limits(blas_threads, user_api="blas"):
        split = time_split(interactions, test_fraction=test_fraction)
        val_split = time_split(split.train, test_fraction=validation_fraction)
        holdout_kw: dict[str, Any] = {"half_life_days": half_life_days, "max_users": max_eval_users}
        val = make_holdout(val_split, **holdout_kw)
        test = make_holdout(split, **holdout_kw) if evaluate_test else None

        tried: dict[str, list[tuple[dict[str, Any], Metrics]]] = {n: [] for n in names}
        deadline = time.monotonic() + budget_s
        for step in range(max(len(grids[n]) for n in names)):
            for name in names:
                if step >= len(grids[name]) or (step > 0 and time.monotonic() > deadline):
                    continue
                params = dict(grids[name][step])
                tried[name].append((params, fit_and_evaluate(MODELS[name](**params), val)))

        reports: list[CandidateReport] = []
        for name in names:
            params, metrics = max(tried[name], key=lambda pm: pm[1].ndcg)
            reports.append(
                CandidateReport(
                    name=name,
                    params=MODELS[name](**params).params(),
                    validation=metrics,
                    tried=[(p, m.ndcg) for p, m in tried[name]],
                )
            )
        for name, peer in (peers or {}).items():
            reports.append(CandidateReport(name, peer.params(), fit_and_evaluate(peer, val)))
        reports.append(CandidateReport("popularity", {}, fit_and_evaluate(Popularity(), val)))
        if test is not None:
            for rep in reports:
                rep.test = _test_metrics(rep, peers or {}, test)

        best = max((r for r in reports if r.name in names), key=lambda r: r.validation.ndcg)
        matrix = build_matrix(interactions, half_life_days=half_life_days)
        start = time.perf_counter()
        model = MODELS[best.name](**best.params).fit(matrix.X)
        refit_s = time.perf_counter() - start
        fallback = Popularity().fit(matrix.X)
    return Selection(model, fallback, matrix, best.name, reports, refit_s)


def _test_metrics(rep: CandidateReport, peers: Mapping[str, Recommender], test: Holdout) -> Metrics:
    if rep.name in peers:
        model: Recommender = type(peers[rep.name])(**peers[rep.name].params())
    elif rep.name == "popularity":
        model = Popularity()
    else:
        model = MODELS[rep.name](**rep.params)
    return fit_and_evaluate(model, test)


__all__ = [
    "DEFAULT_GRIDS",
    "CandidateReport",
    "Selection",
    "default_candidates",
    "train_and_select",
]

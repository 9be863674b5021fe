"""Tune candidates on a per-user validation holdout, blend the best, pick, refit on all data.

1. Hold out each active user's latest events (`per_user_split`) as validation.
2. Spend the tuning budget round-robin over the candidates' grids (`grids.grid`), so every
   candidate is tried at least once however small the budget.
3. Blend the best two or three candidates with weights tuned on the same validation.
4. Pick the best validation NDCG@10; a cheaper model replaces it when the two are within noise
   (the paired bootstrap interval of their difference holds 0 and the gap is under 1%).
5. Refit the pick on every event.

Data too thin to validate on (no user with enough events) never fails training: popularity is
published, and the selection says why.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from threadpoolctl import threadpool_limits

from ranking.base import Popularity, Recommender
from ranking.blend import Blend, tune_weights
from ranking.data import InteractionMatrix, Interactions, build_matrix
from ranking.evaluate import (
    Holdout,
    Metrics,
    evaluate,
    format_table,
    make_holdout,
    paired_difference_ci,
    per_user_split,
    ranking_curve,
)
from ranking.grids import (
    DEFAULT_CANDIDATES,
    Point,
    Search,
    fixed_points,
    grid_then_refine,
    search_space,
    value_transforms,
)

VALIDATION_FRACTION = 0.2
MIN_USER_EVENTS = 5
# Fewer validation users than this and every candidate is inside the noise: say so.
FEW_VALIDATION_USERS = 50
# "Within noise": the paired interval of the NDCG difference holds 0 and the gap is under this.
NOISE_GAP = 0.01
MAX_BLEND_MEMBERS = 3
TUNING_SHARE = 0.6
# Above this many validation (users x items) cells, blend weights move in steps of 0.2, not 0.1.
FINE_BLEND_CELLS = 10_000_000


@dataclass
class CandidateReport:
    name: str
    label: str
    description: dict[str, Any]
    validation: Metrics
    cost: int
    tried: list[tuple[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            **self.description,
            "validation": self.validation.as_dict(),
            "tried": [{"point": p, "ndcg": n} for p, n in self.tried],
        }


@dataclass
class Selection:
    model: Recommender
    fallback: Popularity
    matrix: InteractionMatrix
    best: str
    candidates: list[CandidateReport]
    validation_users: int
    refit_s: float = 0.0
    tuning_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    # NDCG and recall against k on validation, of the pick and of popularity (the baseline).
    curves: dict[str, Any] = field(default_factory=dict)

    @property
    def chosen(self) -> CandidateReport | None:
        return next((c for c in self.candidates if c.name == self.best), None)

    def table(self) -> str:
        out = [
            format_table(
                [(c.label, c.validation) for c in self.candidates],
                title=f"validation (per-user holdout, {self.validation_users} users)",
            )
        ]
        out.append(f"selected: {self.best} {self.model.describe()}; refit in {self.refit_s:.2f} s")
        out += self.notes
        return "\n\n".join(out)

    def metrics(self) -> dict[str, Any]:
        """What a model version records about how it was chosen."""
        chosen = self.chosen
        return {
            "protocol": (
                f"per-user holdout: each user's latest {VALIDATION_FRACTION:.0%} of events "
                f"(users with >= {MIN_USER_EVENTS} events; ties in time shuffled with a seed)"
            ),
            "validation_users": self.validation_users,
            "validation": chosen.validation.as_dict() if chosen else None,
            "candidates": [c.as_dict() for c in self.candidates],
            "tuning_s": round(self.tuning_s, 2),
            "refit_s": round(self.refit_s, 2),
            "notes": self.notes,
            "curves": self.curves,
        }


def train_and_select(
    interactions: Interactions,
    *,
    candidates: Sequence[str] | None = None,
    grids: Mapping[str, Sequence[Point]] | None = None,
    budget_s: float = 120.0,
    half_life_days: float | None = None,
    max_eval_users: int | None = 5000,
    blend: bool = True,
    blas_threads: int = 1,
    seed: int = 0,
) -> Selection:
    """Tune, blend, select and refit, aiming to finish within `budget_s` in all.

    The search stops at TUNING_SHARE of the budget (a fit already running finishes), which
    leaves the rest for the blend and the final refit on all data."""
    names = list(candidates) if candidates is not None else list(DEFAULT_CANDIDATES)
    if not names:
        raise ValueError("no candidate models to select from")
    start = time.monotonic()
    deadline = start + TUNING_SHARE * budget_s
    with threadpool_limits(blas_threads, user_api="blas"):
        matrix = build_matrix(interactions, half_life_days=half_life_days)
        fallback = Popularity().fit(matrix.X)
        split = per_user_split(
            interactions, test_fraction=VALIDATION_FRACTION, min_events=MIN_USER_EVENTS, seed=seed
        )
        val = make_holdout(
            split, half_life_days=half_life_days, max_users=max_eval_users, seed=seed
        )
        n_val = len(val.users)
        pop_report = _report("popularity", Point("popularity", {}, "raw"), Popularity(), val)
        if n_val == 0:
            note = (
                f"no user has {MIN_USER_EVENTS} or more events with a new item among their "
                "latest; nothing to validate on, so popularity is served"
            )
            return Selection(
                fallback, fallback, matrix, "popularity", [pop_report], 0, notes=[note]
            )

        transforms = value_transforms(matrix.X)
        searches = {
            n: fixed_points(grids[n])
            if grids and n in grids
            else grid_then_refine(search_space(n, val.X_train, transforms))
            for n in names
        }
        reports, fitted = _search(searches, val, deadline)
        if blend and len(reports) >= 2:
            blended = _blend(reports, fitted, val)
            if blended is not None:
                reports.append(blended[0])
                fitted["blend"] = blended[1]
        reports.append(pop_report)
        fitted["popularity"] = Popularity()
        tuning_s = time.monotonic() - start

        best = _pick(reports)
        baseline = Popularity().fit(val.X_train)
        curves = {
            "protocol": "the validation holdout above",
            "selected": {"name": best.name, **ranking_curve(fitted[best.name], val)},
            "popularity": ranking_curve(baseline, val),
        }
        notes = []
        if n_val < FEW_VALIDATION_USERS:
            notes.append(
                f"validated on only {n_val} users: candidates' scores are mostly noise "
                "(see each confidence interval)"
            )
        t0 = time.perf_counter()
        model = fitted[best.name].clone().fit(matrix.X)
        refit_s = time.perf_counter() - t0
    return Selection(
        model, fallback, matrix, best.name, reports, n_val, refit_s, tuning_s, notes, curves
    )


def _search(
    searches: dict[str, Search], val: Holdout, deadline: float
) -> tuple[list[CandidateReport], dict[str, Recommender]]:
    """Round-robin over the candidates' searches until the deadline (each candidate is tried
    at least once); returns each candidate's best, best first, and its fitted model."""
    names = list(searches)
    tried: dict[str, list[tuple[Point, Metrics]]] = {n: [] for n in names}
    # Only each candidate's best fitted model is kept (EASE's can be hundreds of MB).
    fitted: dict[str, Recommender] = {}
    pending = {n: next(s) for n, s in searches.items()}
    while pending and (time.monotonic() < deadline or not all(tried.values())):
        for name in list(pending):
            if tried[name] and time.monotonic() > deadline:
                continue
            point = pending[name]
            model = point.build()
            t0 = time.perf_counter()
            model.fit(val.X_train)
            metrics = evaluate(model, val, fit_s=time.perf_counter() - t0)
            if not tried[name] or metrics.ndcg > max(m.ndcg for _, m in tried[name]):
                fitted[name] = model
            tried[name].append((point, metrics))
            try:
                pending[name] = searches[name].send(metrics.ndcg)
            except StopIteration:
                del pending[name]
    reports = []
    for name in names:
        point, metrics = max(tried[name], key=lambda t: t[1].ndcg)
        reports.append(
            CandidateReport(
                name=name,
                label=point.label(),
                description=fitted[name].describe(),
                validation=metrics,
                cost=fitted[name].cost,
                tried=[(p.label(), m.ndcg) for p, m in tried[name]],
            )
        )
    reports.sort(key=lambda r: -r.validation.ndcg)
    return reports, fitted


def _blend(
    reports: list[CandidateReport], fitted: dict[str, Recommender], val: Holdout
) -> tuple[CandidateReport, Blend] | None:
    """A blend of the best candidates with weights tuned on validation; None when the best
    weights give everything to one member."""
    members = [fitted[r.name] for r in reports[:MAX_BLEND_MEMBERS]]
    step = 0.1 if len(val.users) * val.n_items <= FINE_BLEND_CELLS else 0.2
    weights, metrics, grid_tried = tune_weights(members, val, step=step)
    if sum(w > 0 for w in weights) < 2:
        return None
    kept = [(w, m) for w, m in zip(weights, members, strict=True) if w > 0]
    model = Blend.of([m for _, m in kept], [w for w, _ in kept])
    report = CandidateReport(
        name="blend",
        label="blend(" + "+".join(f"{w:.1f}*{m.name}" for w, m in kept) + ")",
        description=model.describe(),
        validation=metrics,
        cost=model.cost,
        tried=[(str(w), n) for w, n in grid_tried],
    )
    return report, model


def _report(name: str, point: Point, model: Recommender, val: Holdout) -> CandidateReport:
    t0 = time.perf_counter()
    model.fit(val.X_train)
    metrics = evaluate(model, val, fit_s=time.perf_counter() - t0)
    return CandidateReport(name, point.label(), model.describe(), metrics, model.cost)


def _pick(reports: list[CandidateReport]) -> CandidateReport:
    """The best validation NDCG, unless a cheaper model is within noise of it."""
    best = max(reports, key=lambda r: r.validation.ndcg)
    for r in sorted(reports, key=lambda r: (r.cost, -r.validation.ndcg)):
        if r.cost >= best.cost or r.name == "popularity":
            continue
        lo, hi = paired_difference_ci(best.validation, r.validation)
        gap = best.validation.ndcg - r.validation.ndcg
        if lo <= 0.0 <= hi and gap < NOISE_GAP * best.validation.ndcg:
            return r
    return best


__all__ = ["CandidateReport", "Selection", "train_and_select"]

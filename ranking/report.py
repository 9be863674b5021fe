"""The product's selected model next to tuned peers on one held-out split (`atelier reco
evaluate`, and the quality benchmark).

Protocol: each user's latest 20% of events are the test (users with fewer than 5 events train
only; ties in time shuffled with a seed); NDCG@10 over every test user, training items excluded.
The product selects on a validation holdout carved from the training part the same way, and so
are the peers tuned: the test part is never looked at before the final scoring.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from threadpoolctl import threadpool_limits

from ranking.base import Popularity, Recommender
from ranking.data import Interactions
from ranking.evaluate import (
    Holdout,
    Metrics,
    evaluate,
    format_table,
    make_holdout,
    per_user_split,
)
from ranking.factors import ALS, BPR
from ranking.neighbours import EASE, RP3beta
from ranking.select import (
    MIN_USER_EVENTS,
    VALIDATION_FRACTION,
    Selection,
    train_and_select,
)

TEST_FRACTION = 0.2
# EASE's dense inverse above this many items takes minutes per fit on one core.
PEER_EASE_MAX_ITEMS = 10_000


def peer_grids() -> dict[str, list[Recommender]]:
    """What a skilled user would try with each library, on the values as they come (EASE and
    RP3beta on binary data, as their papers do)."""
    als_defaults = ALS(factors=100, regularization=0.01, alpha=1.0, iterations=15)
    bpr_defaults = BPR(factors=100, learning_rate=0.01, regularization=0.01, iterations=100)
    return {
        "implicit-als(defaults)": [als_defaults],
        "implicit-als(tuned)": [
            ALS(factors=f, regularization=r, alpha=a, iterations=15)
            for f in (64, 128, 256)
            for r in (0.1, 1.0, 10.0, 50.0)
            for a in (1.0, 10.0)
        ],
        "implicit-bpr(defaults)": [bpr_defaults],
        "implicit-bpr(tuned)": [
            BPR(factors=f, learning_rate=lr, regularization=r, iterations=100)
            for f in (64, 128)
            for lr in (0.01, 0.05)
            for r in (0.01, 0.001)
        ],
        "ease(tuned)": [
            EASE(lam=lam, max_items=PEER_EASE_MAX_ITEMS).with_transform("binary")
            for lam in (50.0, 200.0, 500.0, 1000.0, 3000.0)
        ],
        "rp3beta(tuned)": [
            RP3beta(alpha=a, beta=b, k=200).with_transform("binary")
            for a in (0.5, 0.75, 1.0)
            for b in (0.0, 0.25, 0.5, 0.75)
        ],
        "popularity": [Popularity()],
    }


@dataclass
class PeerResult:
    name: str
    chosen: Recommender
    validation: Metrics
    test: Metrics


@dataclass
class Comparison:
    header: str
    selection: Selection
    product_test: Metrics
    peers: list[PeerResult]
    test: Holdout
    select_s: float

    def best_peer(self) -> PeerResult:
        return max(self.peers, key=lambda p: p.test.ndcg)

    def table(self) -> str:
        rows = [(f"atelier: {self.selection.best}", self.product_test)]
        rows += [(f"{p.name} {_short(p.chosen)}", p.test) for p in self.peers]
        best = self.best_peer()
        ratio = self.product_test.ndcg / best.test.ndcg if best.test.ndcg else float("inf")
        return "\n\n".join(
            [
                self.header,
                self.selection.table(),
                format_table(rows, title=f"test (per-user holdout, {len(self.test.users)} users)"),
                f"atelier / best tuned peer ({best.name}): NDCG@10 {ratio:.3f}x; "
                f"selection took {self.select_s:.1f} s",
            ]
        )


def _short(model: Recommender) -> str:
    keep = {"lam", "alpha", "beta", "factors", "regularization", "learning_rate"}
    return ",".join(f"{k}={v}" for k, v in model.params().items() if k in keep)


def split_for_evaluation(inter: Interactions, *, seed: int = 0) -> tuple[Interactions, Holdout]:
    split = per_user_split(
        inter, test_fraction=TEST_FRACTION, min_events=MIN_USER_EVENTS, seed=seed
    )
    return split.train, make_holdout(split, max_users=None, seed=seed)


def tune_peers(train: Interactions, test: Holdout, *, seed: int = 0) -> list[PeerResult]:
    """Each peer tuned on a validation holdout carved from `train`, then refit on all of
    `train` and scored on `test`."""
    val_split = per_user_split(
        train, test_fraction=VALIDATION_FRACTION, min_events=MIN_USER_EVENTS, seed=seed
    )
    val = make_holdout(val_split, max_users=5000, seed=seed)
    out = []
    with threadpool_limits(1, user_api="blas"):
        for name, grid in peer_grids().items():
            scored = [(m, evaluate(m.fit(val.X_train), val)) for m in grid]
            best, val_metrics = max(scored, key=lambda mm: mm[1].ndcg)
            final = best.clone()
            t0 = time.perf_counter()
            final.fit(test.X_train)
            test_metrics = evaluate(final, test, fit_s=time.perf_counter() - t0)
            out.append(PeerResult(name, final, val_metrics, test_metrics))
    return out


def compare(
    inter: Interactions, *, budget_s: float = 120.0, seed: int = 0, label: str = ""
) -> Comparison:
    train, test = split_for_evaluation(inter, seed=seed)
    t0 = time.perf_counter()
    selection = train_and_select(train, budget_s=budget_s, seed=seed)
    select_s = time.perf_counter() - t0
    product = evaluate(selection.model, test, fit_s=selection.refit_s)
    header = (
        f"{label or 'data'}: {inter.n_users} users, {inter.n_items} items, {len(inter)} events; "
        f"test: each user's latest {TEST_FRACTION:.0%} of events (users with >= "
        f"{MIN_USER_EVENTS} events)"
    )
    return Comparison(
        header, selection, product, tune_peers(train, test, seed=seed), test, select_s
    )


def evaluate_csv(path: Path | str, *, plot: Path | None = None, budget_s: float = 120.0) -> str:
    comparison = compare(Interactions.read_csv(path), budget_s=budget_s, label=str(path))
    if plot is not None:
        plot_comparison(comparison, plot)
    return comparison.table()


def plot_comparison(comparison: Comparison, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [(f"atelier: {comparison.selection.best}", comparison.product_test)]
    rows += [(p.name, p.test) for p in comparison.peers]
    metrics = ("ndcg", "recall", "coverage")
    labels = ("NDCG@10", "Recall@10", "coverage")
    x = np.arange(len(metrics))
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(11, 5))
    for i, (name, m) in enumerate(rows):
        values = [getattr(m, k) for k in metrics]
        bars = ax.bar(x + i * width - 0.4 + width / 2, values, width, label=name)
        bars[0].set_edgecolor("black")
        ax.errorbar(
            x[0] + i * width - 0.4 + width / 2,
            m.ndcg,
            yerr=[[m.ndcg - m.ndcg_lo], [m.ndcg_hi - m.ndcg]],
            fmt="none",
            ecolor="black",
            capsize=2,
        )
    ax.set_xticks(x, labels)
    ax.set_ylabel("test (per-user holdout)")
    ax.set_title(f"Recommender comparison; selected: {comparison.selection.best}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("csv", type=Path)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--budget-s", type=float, default=120.0)
    args = parser.parse_args(argv)
    print(evaluate_csv(args.csv, plot=args.plot, budget_s=args.budget_s))


if __name__ == "__main__":
    main()

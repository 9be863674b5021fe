"""Evaluate every candidate and common peers on a `user,item,value,timestamp` CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

from services.recommender.ranking.data import Interactions
from services.recommender.ranking.models import ALS, BPR, Recommender
from services.recommender.ranking.select import Selection, train_and_select


def default_peers() -> dict[str, Recommender]:
    """implicit's models with the library's default hyper-parameters (fold-in is ours)."""
    return {
        "implicit-als(defaults)": ALS(factors=100, regularization=0.01, alpha=1.0, iterations=15),
        "implicit-bpr(defaults)": BPR(
            factors=100, learning_rate=0.01, regularization=0.01, iterations=100
        ),
    }


def evaluate_csv(
    path: Path | str,
    *,
    plot: Path | None = None,
    budget_s: float = 300.0,
    test_fraction: float = 0.1,
) -> str:
    """Time-holdout comparison of the tuned candidates, implicit defaults and most-popular."""
    inter = Interactions.read_csv(path)
    selection = train_and_select(
        inter, peers=default_peers(), budget_s=budget_s, test_fraction=test_fraction
    )
    header = (
        f"{path}: {inter.n_users} users, {inter.n_items} items, {len(inter)} events; "
        f"global time cut, newest {test_fraction:.0%} of events are the test"
    )
    if plot is not None:
        plot_selection(selection, plot)
    return f"{header}\n\n{selection.table()}"


def plot_selection(selection: Selection, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    reports = [r for r in selection.candidates if r.test is not None]
    names = [r.name for r in reports]
    metrics = ("ndcg", "recall", "map", "hit_rate", "coverage")
    labels = ("NDCG@10", "Recall@10", "MAP@10", "HitRate@10", "coverage")
    x = np.arange(len(metrics))
    width = 0.8 / max(len(reports), 1)
    fig, ax = plt.subplots(figsize=(11, 5))
    for i, rep in enumerate(reports):
        values = [getattr(rep.test, m) for m in metrics]
        ax.bar(x + i * width - 0.4 + width / 2, values, width, label=names[i])
    ax.set_xticks(x, labels)
    ax.set_ylabel("test (time holdout)")
    ax.set_title(f"Recommender comparison; selected: {selection.best}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("csv", type=Path)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--budget-s", type=float, default=300.0)
    args = parser.parse_args(argv)
    print(evaluate_csv(args.csv, plot=args.plot, budget_s=args.budget_s))


if __name__ == "__main__":
    main()

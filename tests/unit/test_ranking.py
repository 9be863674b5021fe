from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from bench.synthetic_interactions import generate
from services.recommender.ranking.data import (
    SECONDS_PER_DAY,
    Event,
    Interactions,
    build_matrix,
    user_row,
)
from services.recommender.ranking.evaluate import Holdout, evaluate, make_holdout, time_split
from services.recommender.ranking.models import (
    ALS,
    BPR,
    EASE,
    ItemKNN,
    ModelFormatError,
    Popularity,
    PureSVD,
    Recommender,
    load_model,
    recommend,
    top_k,
)
from services.recommender.ranking.select import train_and_select

N_CLUSTERS = 10
ITEMS_PER_CLUSTER = 12
USERS_PER_CLUSTER = 30


@pytest.fixture(autouse=True)
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(1, user_api="blas"):
        yield


def _models() -> list[Recommender]:
    return [
        EASE(lam=10.0),
        ItemKNN(k=30),
        ALS(factors=16, regularization=1.0, iterations=10),
        BPR(factors=16, learning_rate=0.05, iterations=150),
        PureSVD(rank=12),
    ]


def _model_id(model: Recommender) -> str:
    return model.name


class Planted:
    """Users like 8 of the 12 items of their cluster plus one random item; the newest liked
    in-cluster item of each user is held out."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        n_items = N_CLUSTERS * ITEMS_PER_CLUSTER
        self.item_cluster = np.repeat(np.arange(N_CLUSTERS), ITEMS_PER_CLUSTER)
        rows: list[tuple[int, int]] = []
        held: list[int] = []
        self.user_cluster = np.repeat(np.arange(N_CLUSTERS), USERS_PER_CLUSTER)
        for u, c in enumerate(self.user_cluster):
            liked = rng.choice(ITEMS_PER_CLUSTER, 8, replace=False) + c * ITEMS_PER_CLUSTER
            rows += [(u, int(i)) for i in liked[:-1]]
            rows.append((u, int(rng.integers(n_items))))
            held.append(int(liked[-1]))
        users, items = np.array(rows).T
        self.X = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (users, items)),
            shape=(len(self.user_cluster), n_items),
        )
        self.X.data[:] = 1.0
        self.held_out = np.array(held)


@pytest.fixture(scope="module")
def planted() -> Planted:
    return Planted()


@pytest.fixture(scope="module")
def fitted(planted: Planted) -> dict[str, Recommender]:
    with threadpool_limits(1, user_api="blas"):
        return {m.name: m.fit(planted.X) for m in [*_models(), Popularity()]}


@pytest.mark.parametrize("name", ["ease", "itemknn", "als", "bpr", "puresvd"])
def test_held_out_liked_item_ranks_in_top_10(
    planted: Planted, fitted: dict[str, Recommender], name: str
) -> None:
    scores = fitted[name].score_users(planted.X)
    idx, _ = top_k(scores, 10, exclude=planted.X)
    hit_rate = np.mean([planted.held_out[u] in idx[u] for u in range(len(idx))])
    assert hit_rate >= 0.8, f"{name}: held-out item in top 10 for only {hit_rate:.0%} of users"


def test_popularity_is_much_weaker_than_models_on_planted_data(
    planted: Planted, fitted: dict[str, Recommender]
) -> None:
    idx, _ = top_k(fitted["popularity"].score_users(planted.X), 10, exclude=planted.X)
    assert np.mean([planted.held_out[u] in idx[u] for u in range(len(idx))]) < 0.5


@pytest.mark.parametrize("name", ["popularity", "ease", "itemknn", "als", "bpr", "puresvd"])
def test_save_load_round_trip_gives_identical_scores(
    planted: Planted, fitted: dict[str, Recommender], name: str, tmp_path: Path
) -> None:
    model = fitted[name]
    model.save(tmp_path / name)
    loaded = load_model(tmp_path / name)
    assert type(loaded) is type(model)
    assert loaded.params() == model.params()
    rows = planted.X[:40]
    np.testing.assert_array_equal(loaded.score_users(rows), model.score_users(rows))
    a, _ = model.similar_items(3, 5)
    b, _ = loaded.similar_items(3, 5)
    np.testing.assert_array_equal(a, b)


def test_load_rejects_missing_or_foreign_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError):
        load_model(tmp_path)
    (tmp_path / "params.json").write_text('{"model": "nope", "format_version": 1}')
    with pytest.raises(ModelFormatError):
        load_model(tmp_path)


@pytest.mark.parametrize("name", ["ease", "itemknn", "als", "bpr", "puresvd"])
def test_fold_in_moves_ranking_towards_new_interests(
    planted: Planted, fitted: dict[str, Recommender], name: str
) -> None:
    model = fitted[name]
    cluster_a, cluster_b = 2, 7
    a_items = np.flatnonzero(planted.item_cluster == cluster_a)
    b_items = np.flatnonzero(planted.item_cluster == cluster_b)
    before = user_row({int(i): 1.0 for i in a_items[:3]}, model.n_items)
    after = user_row({int(i): 1.0 for i in [*a_items[:3], *b_items[:4]]}, model.n_items)

    def share_of_b(row: sp.csr_matrix) -> float:
        idx, _ = recommend(model, row, k=10)
        return float(np.isin(idx, b_items).mean())

    assert share_of_b(after) > share_of_b(before)
    assert share_of_b(after) >= 0.3


@pytest.mark.parametrize("name", ["ease", "itemknn", "als", "bpr", "puresvd"])
def test_similar_items_come_from_the_same_cluster(
    planted: Planted, fitted: dict[str, Recommender], name: str
) -> None:
    idx, scores = fitted[name].similar_items(5, 5)
    assert 5 not in idx
    assert np.all(np.diff(scores) <= 0)
    assert np.mean(planted.item_cluster[idx] == planted.item_cluster[5]) >= 0.6


def _events(*rows: tuple[str, str, float, str]) -> list[Event]:
    return [Event(user=u, item=i, timestamp=t, event=e) for u, i, t, e in rows]


def test_negative_totals_are_excluded_not_trained_on() -> None:
    events = _events(
        ("alice", "a", 1.0, "view"),
        ("alice", "b", 2.0, "view"),
        ("alice", "b", 3.0, "dislike"),
        ("alice", "c", 4.0, "like"),
        ("alice", "c", 5.0, "dislike"),
        ("bob", "b", 6.0, "like"),
    )
    m = build_matrix(events)
    alice, b, c = m.user_index["alice"], m.item_index["b"], m.item_index["c"]
    assert m.X[alice, b] == 0
    assert m.excluded[alice, b] == 1
    assert m.X[alice, c] == 0 and m.excluded[alice, c] == 1
    assert m.X[m.user_index["bob"], b] == 3.0
    assert m.X.data.min() > 0

    pop = Popularity().fit(m.X)
    idx, _ = recommend(pop, m.X[alice], k=10, exclude_items=m.excluded[alice].indices)
    assert b not in idx and c not in idx


def test_unknown_event_type_is_an_error() -> None:
    with pytest.raises(ValueError, match="no weight"):
        build_matrix(_events(("u", "i", 0.0, "teleport")))


def test_time_decay_halves_weight_per_half_life() -> None:
    day = SECONDS_PER_DAY
    events = _events(("u", "old", 0.0, "view"), ("u", "new", 10 * day, "view"))
    m = build_matrix(events, half_life_days=5.0, now=10 * day)
    assert m.X[0, m.item_index["new"]] == pytest.approx(1.0)
    assert m.X[0, m.item_index["old"]] == pytest.approx(0.25)


def test_trending_prefers_recent_items() -> None:
    day = SECONDS_PER_DAY
    items = np.array([0, 0, 0, 1, 1])
    times = np.array([0.0, 0.0, 0.0, 30 * day, 30 * day])
    trend = Popularity(half_life_days=3.0).fit_events(
        items, np.ones(5, dtype=np.float32), times, n_items=2
    )
    assert trend.counts[1] > trend.counts[0]


class _Oracle(Recommender):
    def __init__(self, targets: sp.csr_matrix) -> None:
        self.targets = targets
        self.n_items = targets.shape[1]

    def params(self) -> dict[str, Any]:
        return {}

    def fit(self, X: sp.csr_matrix) -> _Oracle:
        return self

    def score_users(self, user_rows: sp.spmatrix) -> np.ndarray:
        # Rows arrive in holdout.users order; the oracle knows them by content.
        return np.vstack([self._lookup(r) for r in sp.csr_matrix(user_rows)])

    def _lookup(self, row: sp.csr_matrix) -> np.ndarray:
        return self.targets[int(row.indices[0])].toarray().ravel().astype(np.float32)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        pass


def test_metrics_are_one_for_a_perfect_ranking_and_exclude_training_items() -> None:
    # User u has trained on item u only, so the oracle can tell users apart by their row.
    n = 6
    X = sp.identity(n, dtype=np.float32, format="csr")
    targets = sp.csr_matrix(np.roll(np.eye(n, dtype=np.float32), 1, axis=1))
    holdout = Holdout(
        X_train=X, excluded=sp.csr_matrix((n, n)), targets=targets, users=np.arange(n)
    )
    m = evaluate(_Oracle(targets + X), holdout)
    assert (m.ndcg, m.recall, m.map, m.hit_rate) == (1.0, 1.0, 1.0, 1.0)


def test_time_split_is_a_global_cut_and_holdout_targets_are_new_items() -> None:
    inter = generate(200, 100, 5000, seed=1).to_interactions()
    split = time_split(inter, test_fraction=0.2)
    assert split.train.timestamp.max() < split.cut <= split.test.timestamp.min()
    holdout = make_holdout(split)
    assert holdout.targets.multiply(holdout.X_train).nnz == 0
    assert len(holdout.users) > 0


def test_selected_model_is_at_least_as_good_as_tuned_als_on_validation() -> None:
    inter = generate(600, 200, 20000, seed=2).to_interactions()
    selection = train_and_select(
        inter,
        candidates=["als", "itemknn", "ease", "puresvd"],
        grids={
            "als": [{"factors": 16, "regularization": r, "iterations": 8} for r in (5.0, 30.0)],
            "itemknn": [{"k": 50}],
            "ease": [{"lam": 300.0}],
            "puresvd": [{"rank": 16}],
        },
        budget_s=20.0,
    )
    by_name = {c.name: c for c in selection.candidates}
    best = by_name[selection.best]
    assert best.validation.ndcg >= by_name["als"].validation.ndcg
    assert best.validation.ndcg > by_name["popularity"].validation.ndcg
    assert selection.model.name == selection.best
    assert selection.model.n_items == inter.n_items
    assert all(c.test is not None for c in selection.candidates)
    assert "selected:" in selection.table()


def test_interactions_from_csv_round_trip(tmp_path: Path) -> None:
    data = generate(50, 30, 500, seed=3)
    data.write_csv(tmp_path / "x.csv")
    inter = Interactions.read_csv(tmp_path / "x.csv")
    assert len(inter) == 500
    assert inter.weight.sum() == pytest.approx(float(data.value.sum()))

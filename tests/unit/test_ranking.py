from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from bench.synthetic_interactions import bursty, counts_no_time, generate
from ranking.blend import scaled, tune_weights
from ranking.data import (
    SECONDS_PER_DAY,
    Event,
    Interactions,
    build_matrix,
    transform_values,
    user_row,
)
from ranking.evaluate import (
    Holdout,
    evaluate,
    make_holdout,
    per_user_split,
    time_split,
)
from ranking.grids import Point, search_space
from ranking.models import (
    ALS,
    BPR,
    EASE,
    Blend,
    ItemKNN,
    ModelFormatError,
    Popularity,
    PureSVD,
    Recommender,
    RP3beta,
    load_model,
    recommend,
    top_k,
)
from ranking.select import NOISE_GAP, train_and_select

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
        RP3beta(alpha=0.8, beta=0.3, k=30).with_transform("binary"),
        ALS(factors=16, regularization=1.0, iterations=10),
        BPR(factors=16, learning_rate=0.05, iterations=150),
        PureSVD(rank=12),
        Blend.of([EASE(lam=10.0), ALS(factors=16, regularization=1.0, iterations=10)], [0.6, 0.4]),
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


@pytest.mark.parametrize("name", ["ease", "itemknn", "rp3beta", "als", "bpr", "puresvd", "blend"])
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


@pytest.mark.parametrize(
    "name", ["popularity", "ease", "itemknn", "rp3beta", "als", "bpr", "puresvd", "blend"]
)
def test_save_load_round_trip_gives_identical_scores(
    planted: Planted, fitted: dict[str, Recommender], name: str, tmp_path: Path
) -> None:
    model = fitted[name]
    model.save(tmp_path / name)
    loaded = load_model(tmp_path / name)
    assert type(loaded) is type(model)
    assert loaded.describe() == model.describe()
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

    def _fit(self, X: sp.csr_matrix) -> None:
        return None

    def _score(self, rows: sp.csr_matrix) -> np.ndarray:
        # Rows arrive in holdout.users order; the oracle knows them by content.
        return np.vstack([self._lookup(r) for r in rows])

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
            "als": [
                Point("als", {"factors": 16, "regularization": r, "iterations": 8})
                for r in (5.0, 30.0)
            ],
            "itemknn": [Point("itemknn", {"k": 50})],
            "ease": [Point("ease", {"lam": 300.0})],
            "puresvd": [Point("puresvd", {"rank": 16})],
        },
        budget_s=20.0,
    )
    by_name = {c.name: c for c in selection.candidates}
    best = by_name[selection.best]
    assert best.validation.ndcg >= by_name["als"].validation.ndcg - NOISE_GAP
    assert best.validation.ndcg > by_name["popularity"].validation.ndcg
    assert [t[0] for t in by_name["als"].tried] == [
        "als[raw](factors=16,regularization=5)",
        "als[raw](factors=16,regularization=30)",
    ]
    assert selection.model.name == selection.best
    assert selection.model.n_items == inter.n_items
    assert selection.validation_users > 100
    ci = best.validation
    assert ci.ndcg_lo <= ci.ndcg <= ci.ndcg_hi
    assert "selected:" in selection.table()


def _shaped(data: tuple[Any, Any, Any, Any]) -> Interactions:
    users, items, values, times = data
    times = np.zeros(len(users)) if times is None else times
    return Interactions.from_arrays(users, items, values, times)


def test_per_user_split_holds_out_each_users_latest_events() -> None:
    # u1: 10 events at increasing times; u2: 4 events (train only); u3: 5 events, equal times.
    users = ["u1"] * 10 + ["u2"] * 4 + ["u3"] * 5
    items = [f"i{k}" for k in range(10)] + ["i0", "i1", "i2", "i3"] + ["i5", "i6", "i7", "i8", "i9"]
    times = list(range(10)) + [0, 1, 2, 3] + [7.0] * 5
    inter = Interactions.from_arrays(np.array(users), np.array(items), np.ones(19), np.array(times))
    split = per_user_split(inter, test_fraction=0.2, min_events=5, seed=0)
    test_pairs = {
        (inter.user_ids[u], inter.item_ids[i])
        for u, i in zip(split.test.user_idx, split.test.item_idx, strict=True)
    }
    u3 = {p for p in test_pairs if p[0] == "u3"}
    assert {p for p in test_pairs if p[0] == "u1"} == {("u1", "i8"), ("u1", "i9")}
    assert len(u3) == 1 and not any(p[0] == "u2" for p in test_pairs)
    assert len(split.train) + len(split.test) == len(inter)
    # Equal times: a seeded random pick, the same every time, different for another seed.
    again = per_user_split(inter, test_fraction=0.2, min_events=5, seed=0)
    assert np.array_equal(again.test.item_idx, split.test.item_idx)
    picks = {
        int(per_user_split(inter, test_fraction=0.2, min_events=5, seed=s).test.item_idx[-1])
        for s in range(12)
    }
    assert len(picks) > 1


@pytest.mark.parametrize("shape", ["equal_timestamps", "bursty", "counts"])
def test_selection_succeeds_and_beats_popularity_on_every_data_shape(shape: str) -> None:
    if shape == "equal_timestamps":
        data = generate(300, 150, 9000, seed=4)
        inter = data.to_interactions()
        inter = Interactions.from_arrays(
            np.array(inter.user_ids)[inter.user_idx],
            np.array(inter.item_ids)[inter.item_idx],
            inter.weight,
            np.full(len(inter), 1.7e9),
        )
    elif shape == "bursty":
        inter = _shaped(bursty(400, 200, 8000, seed=5))
    else:
        inter = _shaped(counts_no_time(300, 400, 9000, seed=6))
        assert inter.weight.max() > 1000
    selection = train_and_select(inter, candidates=["rp3beta", "itemknn"], budget_s=5.0)
    by_name = {c.name: c for c in selection.candidates}
    assert selection.validation_users > 100
    assert selection.best != "popularity"
    assert by_name[selection.best].validation.ndcg > by_name["popularity"].validation.ndcg
    if shape == "counts":
        # Heavy-tailed counts: the transforms tried start with the damped one.
        assert any("[log1p]" in label for label, _ in by_name["itemknn"].tried)


def test_selection_with_a_handful_of_users_says_so() -> None:
    rng = np.random.default_rng(0)
    users = np.repeat(["a", "b", "c"], 12)
    items = np.array([f"i{k}" for k in rng.integers(0, 15, 36)])
    inter = Interactions.from_arrays(users, items, np.ones(36), np.arange(36.0))
    selection = train_and_select(inter, candidates=["itemknn"], budget_s=2.0)
    assert 0 < selection.validation_users <= 3
    assert any("only" in n and "noise" in n for n in selection.notes)
    assert selection.model.n_items == inter.n_items


def test_selection_without_validation_data_falls_back_to_popularity() -> None:
    # Nobody has 5 events: nothing can be held out, and training still publishes a model.
    users = np.array(["a", "a", "b", "b", "c", "d"])
    items = np.array(["x", "y", "x", "z", "x", "y"])
    inter = Interactions.from_arrays(users, items, np.ones(6), np.zeros(6))
    selection = train_and_select(inter, budget_s=2.0)
    assert selection.best == "popularity" and isinstance(selection.model, Popularity)
    assert selection.validation_users == 0
    assert "nothing to validate on" in selection.notes[0]
    assert selection.metrics()["notes"] == selection.notes


def test_blend_is_never_worse_on_validation_than_its_best_member() -> None:
    inter = generate(400, 150, 12000, seed=7).to_interactions()
    split = per_user_split(inter, test_fraction=0.2, min_events=5)
    val = make_holdout(split)
    members = [
        ItemKNN(k=20).fit(val.X_train),
        PureSVD(rank=8).fit(val.X_train),
        Popularity().fit(val.X_train),
    ]
    alone = [evaluate(m, val).ndcg for m in members]
    weights, metrics, tried = tune_weights(members, val, step=0.25)
    assert metrics.ndcg >= max(alone)
    assert sum(weights) == pytest.approx(1.0) and len(tried) == 15
    # The blend it describes scores exactly as evaluated.
    blend = Blend.of(members, weights)
    assert evaluate(blend, val).ndcg == pytest.approx(metrics.ndcg)


def test_value_transform_applies_when_fitting_and_when_folding_in() -> None:
    X = sp.csr_matrix(np.array([[1.0, 5000.0, 0.0], [3.0, 0.0, 20000.0], [0.0, 7.0, 2.0]]))
    model = ItemKNN(k=5).with_transform("log1p").fit(X)
    manual = ItemKNN(k=5).fit(transform_values(X, "log1p"))
    np.testing.assert_allclose(
        model.score_users(X), manual.score_users(transform_values(X, "log1p"))
    )
    assert model.clone().transform == "log1p"
    with pytest.raises(ValueError, match="unknown value transform"):
        ItemKNN().with_transform("sqrt")


def test_interactions_from_csv_round_trip(tmp_path: Path) -> None:
    data = generate(50, 30, 500, seed=3)
    data.write_csv(tmp_path / "x.csv")
    inter = Interactions.read_csv(tmp_path / "x.csv")
    assert len(inter) == 500
    assert inter.weight.sum() == pytest.approx(float(data.value.sum()))


def test_ease_float32_cholesky_matches_the_float64_closed_form() -> None:
    rng = np.random.default_rng(5)
    X = sp.csr_matrix((rng.random((300, 80)) < 0.1).astype(np.float32))
    model = EASE(lam=20.0).fit(X)
    G = (X.T @ X).toarray().astype(np.float64) + 20.0 * np.eye(80)
    P = np.linalg.inv(G)
    B = P / -np.diag(P)
    np.fill_diagonal(B, 0.0)
    np.testing.assert_allclose(model.B, B, atol=1e-5)
    # Not positive definite (lambda below zero): the general inverse takes over.
    np.testing.assert_allclose(EASE(lam=-2.0).fit(sp.identity(3, format="csr")).B, 0.0)


def test_per_user_split_does_not_depend_on_the_order_events_are_read_in() -> None:
    data = generate(200, 80, 4000, seed=8).to_interactions()
    ids_u, ids_i = np.array(data.user_ids), np.array(data.item_ids)
    # Every event at one time: only the tie-break decides, and it must not follow row order.
    flat = np.zeros(len(data))
    perm = np.random.default_rng(1).permutation(len(data))
    a = Interactions.from_arrays(ids_u[data.user_idx], ids_i[data.item_idx], data.weight, flat)
    b = Interactions.from_arrays(
        ids_u[data.user_idx][perm], ids_i[data.item_idx][perm], data.weight[perm], flat
    )

    def held(inter: Interactions) -> set[tuple[str, str]]:
        t = per_user_split(inter, test_fraction=0.2, min_events=5, seed=3).test
        return {
            (inter.user_ids[u], inter.item_ids[i])
            for u, i in zip(t.user_idx, t.item_idx, strict=True)
        }

    assert held(a) == held(b) and len(held(a)) > 100


def test_als_search_caps_factors_on_large_catalogues() -> None:
    # Serving reads every item's factors per request: a large catalogue keeps them few.
    small = search_space("als", sp.csr_matrix((10, 1_000), dtype=np.float32), ("raw",))
    large = search_space("als", sp.csr_matrix((10, 40_000), dtype=np.float32), ("raw",))
    assert max(small.axes["factors"]) == 512
    assert max(large.axes["factors"]) == 64
    assert all(p.params["factors"] <= 64 for p in large.grid)


def test_blend_scaling_ranks_like_per_user_z_scores() -> None:
    rng = np.random.default_rng(9)
    a = rng.normal(3.0, 2.0, (4, 50)).astype(np.float32)
    b = rng.normal(-1.0, 0.1, (4, 50)).astype(np.float32)
    b[:, :10] = -np.inf  # items a member cannot score take the user's lowest score
    filled = np.where(np.isfinite(b), b, b[:, 10:].min(axis=1, keepdims=True))

    def z(x: np.ndarray) -> np.ndarray:
        return (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)

    reference = 0.6 * z(a) + 0.4 * z(filled)
    ours = 0.6 * scaled(a) + 0.4 * scaled(b)
    np.testing.assert_array_equal(np.argsort(-ours, axis=1), np.argsort(-reference, axis=1))


def test_recorded_curves_agree_with_the_selection_at_k_10() -> None:
    inter = _shaped(bursty(400, 200, 8000, seed=5))
    selection = train_and_select(inter, candidates=["itemknn"], budget_s=5.0, blend=False)
    curves = selection.metrics()["curves"]
    by_name = {c.name: c.validation for c in selection.candidates}
    at_10 = curves["selected"]["k"].index(10)
    for name, curve in ((selection.best, curves["selected"]), ("popularity", curves["popularity"])):
        assert curve["ndcg"][at_10] == pytest.approx(by_name[name].ndcg)
        assert curve["recall"][at_10] == pytest.approx(by_name[name].recall)
    assert curves["selected"]["ndcg"][at_10] > curves["popularity"]["ndcg"][at_10]

"""Latent-factor models: implicit's ALS and BPR, and PureSVD."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import scipy.sparse as sp

# Imported eagerly, not inside fit: threadpoolctl only limits BLAS libraries already loaded
# when a `threadpool_limits` block is entered, and implicit warns about (and suffers from)
# a multi-threaded BLAS.
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from sklearn.decomposition import TruncatedSVD

from ranking.base import Recommender, as_rows
from ranking.data import transform_values


def _cosine_top(factors: np.ndarray, item_idx: int) -> np.ndarray:
    norms = np.linalg.norm(factors, axis=1)
    norms[norms == 0] = 1.0
    similarities: np.ndarray = (factors @ factors[item_idx]) / (norms * norms[item_idx])
    return similarities


class _FactorModel(Recommender):
    item_factors: np.ndarray
    cost = 2

    def _item_similarities(self, item_idx: int) -> np.ndarray:
        return _cosine_top(self.item_factors, item_idx).astype(np.float32)

    def pair_similarity(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        f = self.item_factors
        a, b = f[rows], f[cols]
        na = np.linalg.norm(a, axis=1, keepdims=True)
        nb = np.linalg.norm(b, axis=1, keepdims=True)
        similarities: np.ndarray = (
            (a / np.where(na == 0, 1, na)) @ (b / np.where(nb == 0, 1, nb)).T
        ).astype(np.float32)
        return similarities

    @abstractmethod
    def _user_factors(self, rows: sp.csr_matrix) -> np.ndarray: ...

    def user_factors(self, user_rows: sp.spmatrix) -> np.ndarray:
        """Folded-in factors of raw user rows (the value transform applied)."""
        self._check_fitted()
        rows = as_rows(user_rows, self.n_items)
        return self._user_factors(transform_values(rows, self.transform))


class ALS(_FactorModel):
    """implicit's ALS (Hu et al.); new or changed users are folded in by one least-squares
    solve against the fixed item factors (`recalculate_user`)."""

    name = "als"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 10.0,
        alpha: float = 1.0,
        iterations: int = 15,
        random_state: int = 0,
        num_threads: int = 1,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.random_state = random_state
        self.num_threads = num_threads
        self.item_factors = np.zeros((0, factors), dtype=np.float32)
        self._model: Any = None

    def params(self) -> dict[str, Any]:
        return {
            "factors": self.factors,
            "regularization": self.regularization,
            "alpha": self.alpha,
            "iterations": self.iterations,
            "random_state": self.random_state,
            "num_threads": self.num_threads,
        }

    def _new_model(self) -> Any:
        # The cpu class explicitly: implicit's factory would pick a GPU model when CUDA exists,
        # whose factors and fold-in differ from what we save and serve.
        return AlternatingLeastSquares(
            factors=self.factors,
            regularization=self.regularization,
            alpha=self.alpha,
            iterations=self.iterations,
            random_state=self.random_state,
            num_threads=self.num_threads,
        )

    def _fit(self, X: sp.csr_matrix) -> None:
        model = self._new_model()
        model.fit(X, show_progress=False)
        self._restore({"item_factors": np.ascontiguousarray(model.item_factors)})

    def _user_factors(self, rows: sp.csr_matrix) -> np.ndarray:
        user_factors: np.ndarray = self._model.recalculate_user(np.arange(rows.shape[0]), rows)
        return user_factors

    def _score(self, rows: sp.csr_matrix) -> np.ndarray:
        scores: np.ndarray = self._user_factors(rows) @ self.item_factors.T
        return scores

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"item_factors": self.item_factors}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        # A fresh implicit object holding only the item factors, for fitted and loaded models
        # alike, so both fold users in identically (no cached state left over from training).
        self.item_factors = arrays["item_factors"]
        self._model = self._new_model()
        self._model.item_factors = self.item_factors


class BPR(_FactorModel):
    """implicit's BPR, with fold-in by a learned linear map.

    BPR has no closed-form user update, so at fit time we learn, by ridge least squares over
    the training users, the map W from the mean of a user's item factors to the user factors
    BPR trained; a new or changed user is then `mean(item factors of the row) @ W`. On the
    synthetic benchmark this ranks as well as the trained user factors, whereas a plain ridge
    projection of the row onto the item factors was no better than popularity (its scale is
    off against the item biases).

    One thread by default: implicit's BPR is not reproducible with more.
    """

    name = "bpr"

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.01,
        regularization: float = 0.01,
        iterations: int = 100,
        fold_in_regularization: float = 1.0,
        random_state: int = 0,
        num_threads: int = 1,
    ) -> None:
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.fold_in_regularization = fold_in_regularization
        self.random_state = random_state
        self.num_threads = num_threads
        self.item_factors = np.zeros((0, factors), dtype=np.float32)
        self.item_bias = np.zeros(0, dtype=np.float32)
        self.fold_in = np.zeros((factors, factors), dtype=np.float32)

    def params(self) -> dict[str, Any]:
        return {
            "factors": self.factors,
            "learning_rate": self.learning_rate,
            "regularization": self.regularization,
            "iterations": self.iterations,
            "fold_in_regularization": self.fold_in_regularization,
            "random_state": self.random_state,
            "num_threads": self.num_threads,
        }

    def _fit(self, X: sp.csr_matrix) -> None:
        model = BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            random_state=self.random_state,
            num_threads=self.num_threads,
        )
        model.fit(X, show_progress=False)
        # implicit appends an item-bias column (users get a constant 1 there).
        V = np.asarray(model.item_factors)
        self.item_factors = np.ascontiguousarray(V[:, :-1])
        self.item_bias = np.ascontiguousarray(V[:, -1])
        active = np.diff(X.indptr) > 0
        A = self._mean_item_factors(X[active]).astype(np.float64)
        U = np.asarray(model.user_factors)[active, :-1].astype(np.float64)
        gram = A.T @ A + self.fold_in_regularization * np.eye(A.shape[1])
        self.fold_in = np.linalg.solve(gram, A.T @ U).astype(np.float32)

    def _mean_item_factors(self, rows: sp.csr_matrix) -> np.ndarray:
        binary = (rows > 0).astype(np.float32)
        counts = np.maximum(np.asarray(binary.sum(axis=1)).ravel(), 1.0)
        mean_factors: np.ndarray = np.asarray(binary @ self.item_factors) / counts[:, None].astype(
            np.float32
        )
        return mean_factors

    def _user_factors(self, rows: sp.csr_matrix) -> np.ndarray:
        return self._mean_item_factors(rows) @ self.fold_in

    def _score(self, rows: sp.csr_matrix) -> np.ndarray:
        scores: np.ndarray = self._user_factors(rows) @ self.item_factors.T + self.item_bias
        return scores

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "item_factors": self.item_factors,
            "item_bias": self.item_bias,
            "fold_in": self.fold_in,
        }

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_factors = arrays["item_factors"]
        self.item_bias = arrays["item_bias"]
        self.fold_in = arrays["fold_in"]


class PureSVD(_FactorModel):
    """Cremonesi et al.'s PureSVD: score = X V V^T with V the top right singular vectors."""

    name = "puresvd"

    def __init__(self, rank: int = 64, n_iter: int = 7, random_state: int = 0) -> None:
        self.rank = rank
        self.n_iter = n_iter
        self.random_state = random_state
        self.item_factors = np.zeros((0, rank), dtype=np.float32)

    def params(self) -> dict[str, Any]:
        return {"rank": self.rank, "n_iter": self.n_iter, "random_state": self.random_state}

    def _fit(self, X: sp.csr_matrix) -> None:
        rank = max(1, min(self.rank, min(X.shape) - 1))
        svd = TruncatedSVD(
            n_components=rank,
            algorithm="randomized",
            n_iter=self.n_iter,
            random_state=self.random_state,
        )
        svd.fit(X)
        self.item_factors = np.ascontiguousarray(svd.components_.T, dtype=np.float32)

    def _user_factors(self, rows: sp.csr_matrix) -> np.ndarray:
        return np.asarray(rows @ self.item_factors)

    def _score(self, rows: sp.csr_matrix) -> np.ndarray:
        scores: np.ndarray = self._user_factors(rows) @ self.item_factors.T
        return scores

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"item_factors": self.item_factors}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_factors = arrays["item_factors"]

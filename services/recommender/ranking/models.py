"""Recommender models behind one small interface.

Every model scores arbitrary user rows (`score_users`), so a user's newest interactions can be
folded in at request time without retraining. Models persist as `arrays.npz` + `params.json`
(no pickle); `params.json` is written last, so its presence marks a complete model directory.
"""

from __future__ import annotations

import json
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

# Imported eagerly, not inside fit: threadpoolctl only limits BLAS libraries already loaded
# when a `threadpool_limits` block is entered, and implicit warns about (and suffers from)
# a multi-threaded BLAS.
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from sklearn.decomposition import TruncatedSVD

from services.recommender.ranking.data import decay_factors

FORMAT_VERSION = 1
PARAMS_FILE = "params.json"
ARRAYS_FILE = "arrays.npz"


class ModelFormatError(ValueError):
    """A model directory is missing, corrupt or from an unknown format version."""


class NotFittedError(RuntimeError):
    pass


def _as_rows(user_rows: sp.spmatrix | np.ndarray, n_items: int) -> sp.csr_matrix:
    rows = sp.csr_matrix(user_rows, dtype=np.float32)
    if rows.shape[1] != n_items:
        raise ValueError(f"user rows have {rows.shape[1]} items, model has {n_items}")
    return rows


def top_k(
    scores: np.ndarray, k: int, exclude: sp.spmatrix | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top `k` of a (users x items) score array, best first.

    Items in `exclude` (same shape; any stored entry counts) get -inf; `scores` is modified in
    place to avoid copying a dense users x items array. Excluded or unscorable items can still
    appear with -inf when fewer than `k` items remain; `recommend` drops them.
    """
    if scores.ndim == 1:
        scores = scores[None, :]
    if exclude is not None:
        ex = sp.coo_matrix(exclude)
        scores[ex.row, ex.col] = -np.inf
    k = min(k, scores.shape[1])
    if k <= 0:
        empty = np.empty((scores.shape[0], 0))
        return empty.astype(np.int64), empty.astype(np.float32)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


class Recommender(ABC):
    name: ClassVar[str]
    registry: ClassVar[dict[str, type[Recommender]]] = {}

    n_items: int = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            Recommender.registry[cls.name] = cls

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """Constructor keyword arguments; `type(self)(**self.params())` is an unfitted twin."""

    @abstractmethod
    def fit(self, X: sp.csr_matrix) -> Recommender: ...

    @abstractmethod
    def score_users(self, user_rows: sp.spmatrix) -> np.ndarray:
        """Dense (rows x items) float32 scores; higher is better."""

    @abstractmethod
    def _arrays(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _restore(self, arrays: dict[str, np.ndarray]) -> None: ...

    def similar_items(self, item_idx: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims = self._item_similarities(item_idx)
        sims[item_idx] = -np.inf
        idx, vals = top_k(sims, k)
        keep = np.isfinite(vals[0])
        return idx[0][keep], vals[0][keep]

    def _item_similarities(self, item_idx: int) -> np.ndarray:
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not self.n_items:
            raise NotFittedError(f"{self.name} model is not fitted")

    def save(self, directory: Path | str) -> None:
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "model": self.name,
            "format_version": FORMAT_VERSION,
            "n_items": self.n_items,
            "params": self.params(),
        }
        _atomic_write(directory / ARRAYS_FILE, lambda fh: np.savez(fh, **self._arrays()))
        _atomic_write(directory / PARAMS_FILE, lambda fh: fh.write(json.dumps(meta).encode()))

    @staticmethod
    def load(directory: Path | str) -> Recommender:
        directory = Path(directory)
        try:
            meta = json.loads((directory / PARAMS_FILE).read_text())
            if meta.get("format_version") != FORMAT_VERSION:
                raise ModelFormatError(f"unsupported format version {meta.get('format_version')}")
            cls = Recommender.registry[meta["model"]]
            model = cls(**meta["params"])
            with np.load(directory / ARRAYS_FILE, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
            model.n_items = int(meta["n_items"])
            model._restore(arrays)
        except ModelFormatError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise ModelFormatError(f"cannot load model from {directory}: {exc}") from exc
        return model


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def recommend(
    model: Recommender,
    user_row: sp.spmatrix,
    *,
    k: int = 10,
    exclude_items: np.ndarray | None = None,
    exclude_seen: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` item indices and scores for one user row (request-time fold-in)."""
    row = _as_rows(user_row, model.n_items)
    scores = model.score_users(row)[0]
    if exclude_seen:
        scores[row.indices] = -np.inf
    if exclude_items is not None and len(exclude_items):
        scores[np.asarray(exclude_items)] = -np.inf
    idx, vals = top_k(scores, k)
    keep = np.isfinite(vals[0])
    return idx[0][keep], vals[0][keep]


def _cosine_top(factors: np.ndarray, item_idx: int) -> np.ndarray:
    norms = np.linalg.norm(factors, axis=1)
    norms[norms == 0] = 1.0
    return (factors @ factors[item_idx]) / (norms * norms[item_idx])


class Popularity(Recommender):
    """Most popular items; with `half_life_days`, "trending" (time-decayed counts)."""

    name = "popularity"

    def __init__(self, half_life_days: float | None = None) -> None:
        self.half_life_days = half_life_days
        self.counts = np.zeros(0, dtype=np.float32)

    def params(self) -> dict[str, Any]:
        return {"half_life_days": self.half_life_days}

    def fit(self, X: sp.csr_matrix) -> Popularity:
        # Distinct users per item, not summed weight: one binge-viewer should not make a hit.
        self.counts = np.asarray((X > 0).sum(axis=0), dtype=np.float32).ravel()
        self.n_items = X.shape[1]
        return self

    def fit_events(
        self,
        item_idx: np.ndarray,
        weight: np.ndarray,
        timestamp: np.ndarray,
        *,
        n_items: int,
        now: float | None = None,
    ) -> Popularity:
        """Time-decayed counts of positive events, for trending lists."""
        pos = weight > 0
        decay = decay_factors(timestamp[pos], half_life_days=self.half_life_days, now=now)
        self.counts = np.bincount(item_idx[pos], weights=decay, minlength=n_items).astype(
            np.float32
        )
        self.n_items = n_items
        return self

    def score_users(self, user_rows: sp.spmatrix) -> np.ndarray:
        self._check_fitted()
        rows = _as_rows(user_rows, self.n_items)
        return np.tile(self.counts, (rows.shape[0], 1))

    def _item_similarities(self, item_idx: int) -> np.ndarray:
        return self.counts.copy()

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.counts = arrays["counts"]


class EASE(Recommender):
    """Steck's EASE: closed-form item-item weights, B = I - P diagMat(1/diag(P)).

    Fit costs O(items^3) time and O(items^2) memory, so above `max_items` only the most popular
    `max_items` items are modelled; the others score -inf and are never recommended.
    """

    name = "ease"

    def __init__(self, lam: float = 500.0, max_items: int = 10_000) -> None:
        self.lam = lam
        self.max_items = max_items
        self.items = np.zeros(0, dtype=np.int64)
        self.B = np.zeros((0, 0), dtype=np.float32)

    def params(self) -> dict[str, Any]:
        return {"lam": self.lam, "max_items": self.max_items}

    def fit(self, X: sp.csr_matrix) -> EASE:
        n_items = X.shape[1]
        if n_items > self.max_items:
            pop = np.asarray((X > 0).sum(axis=0)).ravel()
            self.items = np.sort(np.argsort(-pop, kind="stable")[: self.max_items])
        else:
            self.items = np.arange(n_items)
        Xs = X[:, self.items]
        G = (Xs.T @ Xs).toarray().astype(np.float64)
        G[np.diag_indices_from(G)] += self.lam
        P = np.linalg.inv(G)
        B = P / (-np.diag(P))
        B[np.diag_indices_from(B)] = 0.0
        self.B = B.astype(np.float32)
        self.n_items = n_items
        return self

    def _subset(self) -> bool:
        return len(self.items) != self.n_items

    def score_users(self, user_rows: sp.spmatrix) -> np.ndarray:
        self._check_fitted()
        rows = _as_rows(user_rows, self.n_items)
        if not self._subset():
            return np.asarray(rows @ self.B, dtype=np.float32)
        out = np.full((rows.shape[0], self.n_items), -np.inf, dtype=np.float32)
        out[:, self.items] = rows[:, self.items] @ self.B
        return out

    def _item_similarities(self, item_idx: int) -> np.ndarray:
        out = np.full(self.n_items, -np.inf, dtype=np.float32)
        pos = np.searchsorted(self.items, item_idx)
        if pos < len(self.items) and self.items[pos] == item_idx:
            out[self.items] = self.B[pos]
        return out

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"B": self.B, "items": self.items}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.B = arrays["B"]
        self.items = arrays["items"]


class ItemKNN(Recommender):
    """Item-based cosine neighbourhood; each item keeps its `k` most similar items (sparse)."""

    name = "itemknn"

    def __init__(self, k: int = 100, shrink: float = 0.0) -> None:
        self.k = k
        self.shrink = shrink
        self.S = sp.csr_matrix((0, 0), dtype=np.float32)

    def params(self) -> dict[str, Any]:
        return {"k": self.k, "shrink": self.shrink}

    def fit(self, X: sp.csr_matrix) -> ItemKNN:
        X = sp.csr_matrix(X, dtype=np.float32)
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=0)).ravel())
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        Xn = (X @ sp.diags(inv.astype(np.float32))).tocsc()
        S = (Xn.T @ Xn).tocsr()
        S.setdiag(0.0)
        S.eliminate_zeros()
        if self.shrink > 0:
            # Shrink similarities of items with few co-occurrences towards zero.
            co = ((X > 0).astype(np.float32).T @ (X > 0).astype(np.float32)).tocsr()
            co = co.multiply(S != 0).tocsr()
            co.data = co.data / (co.data + self.shrink)
            S = S.multiply(co).tocsr()
        self.S = _prune_rows(S, self.k)
        self.n_items = X.shape[1]
        return self

    def score_users(self, user_rows: sp.spmatrix) -> np.ndarray:
        self._check_fitted()
        rows = _as_rows(user_rows, self.n_items)
        return np.asarray((rows @ self.S).toarray(), dtype=np.float32)

    def _item_similarities(self, item_idx: int) -> np.ndarray:
        row = self.S.getrow(item_idx)
        out = np.full(self.n_items, -np.inf, dtype=np.float32)
        out[row.indices] = row.data
        return out

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"data": self.S.data, "indices": self.S.indices, "indptr": self.S.indptr}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.S = sp.csr_matrix(
            (arrays["data"], arrays["indices"], arrays["indptr"]),
            shape=(self.n_items, self.n_items),
        )


def _prune_rows(S: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the `k` largest entries of each row."""
    indptr = S.indptr
    keep = np.ones(S.nnz, dtype=bool)
    counts = np.diff(indptr)
    for r in np.flatnonzero(counts > k):
        lo, hi = indptr[r], indptr[r + 1]
        drop = np.argpartition(-S.data[lo:hi], k)[k:]
        keep[lo + drop] = False
    rows = np.repeat(np.arange(S.shape[0]), counts)[keep]
    out = sp.csr_matrix((S.data[keep].astype(np.float32), (rows, S.indices[keep])), shape=S.shape)
    out.sort_indices()
    return out


class _FactorModel(Recommender):
    item_factors: np.ndarray

    def _item_similarities(self, item_idx: int) -> np.ndarray:
        return _cosine_top(self.item_factors, item_idx).astype(np.float32)


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

    def fit(self, X: sp.csr_matrix) -> ALS:
        model = self._new_model()
        model.fit(sp.csr_matrix(X, dtype=np.float32), show_progress=False)
        self._restore({"item_factors": np.ascontiguousarray(model.item_factors)})
        self.n_items = X.shape[1]
        return self

    def user_factors(self, user_rows: sp.spmatrix) -> np.ndarray:
        self._check_fitted()
        rows = _as_rows(user_rows, self.n_items)
        return self._model.recalculate_user(np.arange(rows.shape[0]), rows)

    def score_users(self, user_rows: sp.spmatrix) -> np.ndarray:
        return self.user_factors(user_rows) @ self.item_factors.T

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

    def fit(self, X: sp.csr_matrix) -> BPR:
        model = BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            random_state=self.random_state,
            num_threads=self.num_threads,
        )
        X = sp.csr_matrix(X, dtype=np.float32)
        model.fit(X, show_progress=False)
        # implicit appends an item-bias column (users get a constant 1 there).
        V = np.asarray(model.item_factors)
        self.item_factors = np.ascontiguousarray(V[:, :-1])
        self.item_bias = np.ascontiguousarray(V[:, -1])
        self.n_items = X.shape[1]
        active = np.diff(X.indptr) > 0
        A = self._mean_item_factors(X[active]).astype(np.float64)
        U = np.asarray(model.user_factors)[active, :-1].astype(np.float64)
        gram = A.T @ A + self.fold_in_regularization * np.eye(A.shape[1])
        self.fold_in = np.linalg.solve(gram, A.T @ U).astype(np.float32)
        return self

    def _mean_item_factors(self, rows: sp.csr_matrix) -> np.ndarray:
        binary = (rows > 0).astype(np.float32)
        counts = np.maximum(np.asarray(binary.sum(axis=1)).ravel(), 1.0)
        return np.asarray(binary @ self.item_factors) / counts[:, None].astype(np.float32)

    def user_factors(self, user_rows: sp.spmatrix) -> np.ndarray:
        self._check_fitted()
        return self._mean_item_factors(_as_rows(user_rows, self.n_items)) @ self.fold_in

    def score_users(self, user_rows: sp.spmatrix) -> np.ndarray:
        return self.user_factors(user_rows) @ self.item_factors.T + self.item_bias

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

    def fit(self, X: sp.csr_matrix) -> PureSVD:
        rank = max(1, min(self.rank, min(X.shape) - 1))
        svd = TruncatedSVD(
            n_components=rank,
            algorithm="randomized",
            n_iter=self.n_iter,
            random_state=self.random_state,
        )
        svd.fit(sp.csr_matrix(X, dtype=np.float32))
        self.item_factors = np.ascontiguousarray(svd.components_.T, dtype=np.float32)
        self.n_items = X.shape[1]
        return self

    def score_users(self, user_rows: sp.spmatrix) -> np.ndarray:
        self._check_fitted()
        rows = _as_rows(user_rows, self.n_items)
        return np.asarray(rows @ self.item_factors) @ self.item_factors.T

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"item_factors": self.item_factors}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_factors = arrays["item_factors"]


MODELS: dict[str, type[Recommender]] = Recommender.registry
load_model = Recommender.load

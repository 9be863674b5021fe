"""Item-item models: EASE, item-kNN and RP3beta. Each scores a user row as row @ S."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from ranking.base import Recommender

# Dense blocks of an items x items product are capped at this many cells to bound memory.
MAX_BLOCK_CELLS = 16_000_000


def _positions(sorted_ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``wanted`` in ``sorted_ids`` and whether each is there at all."""
    pos = np.searchsorted(sorted_ids, wanted)
    clipped = np.minimum(pos, max(len(sorted_ids) - 1, 0))
    ok = (pos < len(sorted_ids)) & (sorted_ids[clipped] == wanted) if len(sorted_ids) else pos < 0
    return clipped, ok


class EASE(Recommender):
    """Steck's EASE: closed-form item-item weights, B = I - P diagMat(1/diag(P)).

    Fit costs O(items^3) time and O(items^2) memory, so above `max_items` only the most popular
    `max_items` items are modelled; the others score -inf and are never recommended.
    """

    name = "ease"
    cost = 3

    def __init__(self, lam: float = 500.0, max_items: int = 10_000) -> None:
        self.lam = lam
        self.max_items = max_items
        self.items = np.zeros(0, dtype=np.int64)
        self.B = np.zeros((0, 0), dtype=np.float32)

    def params(self) -> dict[str, Any]:
        return {"lam": self.lam, "max_items": self.max_items}

    def _fit(self, X: sp.csr_matrix) -> None:
        n_items = X.shape[1]
        if n_items > self.max_items:
            pop = np.asarray((X > 0).sum(axis=0)).ravel()
            self.items = np.sort(np.argsort(-pop, kind="stable")[: self.max_items])
        else:
            self.items = np.arange(n_items)
        Xs = X[:, self.items]
        G = (Xs.T @ Xs).toarray().astype(np.float32)
        G[np.diag_indices_from(G)] += self.lam
        P = _spd_inverse(G)
        P /= -np.diag(P)
        P[np.diag_indices_from(P)] = 0.0
        self.B = P

    def _subset(self) -> bool:
        return len(self.items) != self.n_items

    def _score(self, rows: sp.csr_matrix) -> np.ndarray:
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

    def pair_similarity(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), len(cols)), dtype=np.float32)
        rpos, rok = _positions(self.items, rows)
        cpos, cok = _positions(self.items, cols)
        if rok.any() and cok.any():
            out[np.ix_(rok, cok)] = self.B[np.ix_(rpos[rok], cpos[cok])]
        return out

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"B": self.B, "items": self.items}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.B = arrays["B"]
        self.items = arrays["items"]


def _spd_inverse(G: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite float32 matrix by Cholesky (LAPACK potrf +
    potri): several times faster than a float64 LU inverse (see docs/perf.md), and the regulariser
    on the diagonal keeps it well conditioned enough for float32."""
    factor, info = lapack.spotrf(G, lower=1, clean=0, overwrite_a=0)
    if info == 0:
        inv, info = lapack.spotri(factor, lower=1, overwrite_c=1)
    if info != 0:  # not positive definite after all (lambda <= 0): the general inverse
        return np.linalg.inv(G.astype(np.float64)).astype(np.float32)
    lower: np.ndarray = np.tril(inv)
    lower += np.tril(inv, -1).T
    return lower


class _SparseItemModel(Recommender):
    """A model whose whole state is a sparse items x items matrix `S`; scores are row @ S."""

    S: sp.csr_matrix

    def _score(self, rows: sp.csr_matrix) -> np.ndarray:
        return np.asarray((rows @ self.S).toarray(), dtype=np.float32)

    def _item_similarities(self, item_idx: int) -> np.ndarray:
        row = self.S.getrow(item_idx)
        out = np.full(self.n_items, -np.inf, dtype=np.float32)
        out[row.indices] = row.data
        return out

    def pair_similarity(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return np.asarray(self.S[rows][:, cols].toarray(), dtype=np.float32)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"data": self.S.data, "indices": self.S.indices, "indptr": self.S.indptr}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.S = sp.csr_matrix(
            (arrays["data"], arrays["indices"], arrays["indptr"]),
            shape=(self.n_items, self.n_items),
        )


class ItemKNN(_SparseItemModel):
    """Item-based cosine neighbourhood; each item keeps its `k` most similar items (sparse)."""

    name = "itemknn"

    def __init__(self, k: int = 100, shrink: float = 0.0) -> None:
        self.k = k
        self.shrink = shrink
        self.S = sp.csr_matrix((0, 0), dtype=np.float32)

    def params(self) -> dict[str, Any]:
        return {"k": self.k, "shrink": self.shrink}

    def _fit(self, X: sp.csr_matrix) -> None:
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


class RP3beta(_SparseItemModel):
    """Paudel et al.'s RP3beta: three-step random walk item -> user -> item, with transition
    probabilities raised to `alpha` and the arrival item's degree penalised by `beta`, each
    item keeping its `k` strongest neighbours."""

    name = "rp3beta"

    def __init__(self, alpha: float = 1.0, beta: float = 0.5, k: int = 200) -> None:
        self.alpha = alpha
        self.beta = beta
        self.k = k
        self.S = sp.csr_matrix((0, 0), dtype=np.float32)

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta, "k": self.k}

    def _fit(self, X: sp.csr_matrix) -> None:
        n_items = X.shape[1]
        p_ui = _row_normalise(X)
        p_iu = _row_normalise(sp.csr_matrix(X.T))
        if self.alpha != 1.0:
            p_ui.data **= self.alpha
            p_iu.data **= self.alpha
        degree = np.asarray((X > 0).sum(axis=0), dtype=np.float64).ravel()
        penalty = np.divide(
            1.0, degree**self.beta, out=np.zeros_like(degree), where=degree > 0
        ).astype(np.float32)
        block = max(1, MAX_BLOCK_CELLS // max(n_items, 1))
        parts = []
        for start in range(0, n_items, block):
            stop = min(start + block, n_items)
            W = (p_iu[start:stop] @ p_ui).toarray() * penalty
            W[np.arange(stop - start), np.arange(start, stop)] = 0.0
            parts.append(_dense_top_k(W, self.k))
        self.S = sp.vstack(parts, format="csr").astype(np.float32)

    def _score(self, rows: sp.csr_matrix) -> np.ndarray:
        if self.alpha != 1.0:
            rows = rows.copy()
            rows.data **= self.alpha
        return super()._score(rows)


def _row_normalise(X: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    inv = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return sp.csr_matrix(sp.diags(inv.astype(np.float32)) @ X, dtype=np.float32)


def _dense_top_k(W: np.ndarray, k: int) -> sp.csr_matrix:
    """The `k` largest positive entries of each row of a dense block, as CSR."""
    n_rows, n_cols = W.shape
    k = min(k, n_cols)
    cols = np.argpartition(-W, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(W, cols, axis=1)
    keep = vals > 0
    rows = np.repeat(np.arange(n_rows), k).reshape(n_rows, k)
    out = sp.csr_matrix((vals[keep], (rows[keep], cols[keep])), shape=(n_rows, n_cols))
    out.sort_indices()
    return out


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

"""The recommender interface, its persistence, top-k helpers and the popularity baseline.

Every model scores arbitrary user rows (`score_users`), so a user's newest interactions can be
folded in at request time without retraining. A model carries its value transform (how raw
interaction totals become the numbers it trains on), and applies it both when fitting and when
scoring a folded-in row, so training and serving can never disagree about it.

Models persist as `arrays.npz` + `params.json` (no pickle); `params.json` is written last, so its
presence marks a complete model directory.
"""

from __future__ import annotations

import json
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from ranking.data import VALUE_TRANSFORMS, decay_factors, transform_values

FORMAT_VERSION = 1
PARAMS_FILE = "params.json"
ARRAYS_FILE = "arrays.npz"


class ModelFormatError(ValueError):
    """A model directory is missing, corrupt or from an unknown format version."""


class NotFittedError(RuntimeError):
    pass


def as_rows(user_rows: sp.spmatrix | np.ndarray, n_items: int) -> sp.csr_matrix:
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
    # Relative cost of serving and refitting, used to prefer the cheaper of two models whose
    # validation scores are within noise of each other.
    cost: ClassVar[int] = 1

    n_items: int = 0
    transform: str = "raw"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            Recommender.registry[cls.name] = cls

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """Constructor keyword arguments; `clone()` builds an unfitted twin from them."""

    @abstractmethod
    def _fit(self, X: sp.csr_matrix) -> None:
        """Fit on transformed values; set everything `_score` needs."""

    @abstractmethod
    def _score(self, rows: sp.csr_matrix) -> np.ndarray:
        """Dense (rows x items) float32 scores of transformed rows; higher is better."""

    @abstractmethod
    def _arrays(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _restore(self, arrays: dict[str, np.ndarray]) -> None: ...

    def with_transform(self, transform: str) -> Self:
        if transform not in VALUE_TRANSFORMS:
            raise ValueError(f"unknown value transform {transform!r}")
        self.transform = transform
        return self

    def clone(self) -> Self:
        """An unfitted twin with the same hyper-parameters and value transform."""
        return type(self)(**self.params()).with_transform(self.transform)

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "transform": self.transform, "params": self.params()}

    @staticmethod
    def from_description(description: dict[str, Any]) -> Recommender:
        """An unfitted model from `describe()`'s output."""
        cls = Recommender.registry[description["model"]]
        return cls(**description["params"]).with_transform(description.get("transform", "raw"))

    def fit(self, X: sp.csr_matrix) -> Self:
        X = sp.csr_matrix(X, dtype=np.float32)
        self._fit(transform_values(X, self.transform))
        self.n_items = X.shape[1]
        return self

    def score_users(self, user_rows: sp.spmatrix | np.ndarray) -> np.ndarray:
        """Dense (rows x items) float32 scores; higher is better."""
        self._check_fitted()
        rows = as_rows(user_rows, self.n_items)
        return self._score(transform_values(rows, self.transform))

    def similar_items(self, item_idx: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims = self._item_similarities(item_idx)
        sims[item_idx] = -np.inf
        idx, vals = top_k(sims, k)
        keep = np.isfinite(vals[0])
        return idx[0][keep], vals[0][keep]

    def pair_similarity(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Item-item similarity (len(rows) x len(cols)) under the model, 0 where undefined."""
        if len(rows) == 0 or len(cols) == 0:
            return np.zeros((len(rows), len(cols)), dtype=np.float32)
        out = np.stack([self._item_similarities(int(r))[cols] for r in rows])
        out[~np.isfinite(out)] = 0.0
        return out.astype(np.float32)

    def _item_similarities(self, item_idx: int) -> np.ndarray:
        return np.full(self.n_items, -np.inf, dtype=np.float32)

    def _check_fitted(self) -> None:
        if not self.n_items:
            raise NotFittedError(f"{self.name} model is not fitted")

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: Path | str) -> None:
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_arrays(directory)
        meta = {"format_version": FORMAT_VERSION, "n_items": self.n_items, **self.describe()}
        _atomic_write(directory / PARAMS_FILE, lambda fh: fh.write(json.dumps(meta).encode()))

    def _save_arrays(self, directory: Path) -> None:
        _atomic_write(
            directory / ARRAYS_FILE, lambda fh: np.savez(fh, allow_pickle=False, **self._arrays())
        )

    def _load_arrays(self, directory: Path) -> None:
        with np.load(directory / ARRAYS_FILE, allow_pickle=False) as npz:
            self._restore({key: npz[key] for key in npz.files})

    @staticmethod
    def load(directory: Path | str) -> Recommender:
        directory = Path(directory)
        try:
            meta = json.loads((directory / PARAMS_FILE).read_text())
            if meta.get("format_version") != FORMAT_VERSION:
                raise ModelFormatError(f"unsupported format version {meta.get('format_version')}")
            model = Recommender.from_description(meta)
            model.n_items = int(meta["n_items"])
            model._load_arrays(directory)
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
    row = as_rows(user_row, model.n_items)
    scores = model.score_users(row)[0]
    if exclude_seen:
        scores[row.indices] = -np.inf
    if exclude_items is not None and len(exclude_items):
        scores[np.asarray(exclude_items)] = -np.inf
    idx, vals = top_k(scores, k)
    keep = np.isfinite(vals[0])
    return idx[0][keep], vals[0][keep]


class Popularity(Recommender):
    """Most popular items; with `half_life_days`, "trending" (time-decayed counts)."""

    name = "popularity"

    def __init__(self, half_life_days: float | None = None) -> None:
        self.half_life_days = half_life_days
        self.counts = np.zeros(0, dtype=np.float32)

    def params(self) -> dict[str, Any]:
        return {"half_life_days": self.half_life_days}

    def _fit(self, X: sp.csr_matrix) -> None:
        # Distinct users per item, not summed weight: one binge-viewer should not make a hit.
        self.counts = np.asarray((X > 0).sum(axis=0), dtype=np.float32).ravel()

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

    def _score(self, rows: sp.csr_matrix) -> np.ndarray:
        return np.tile(self.counts, (rows.shape[0], 1))

    def _item_similarities(self, item_idx: int) -> np.ndarray:
        return self.counts.copy()

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.counts = arrays["counts"]

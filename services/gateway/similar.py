"""Nearest neighbours for ``GET /v1/content/{id}/similar``, from tenant vectors kept in memory.

The exact answer needs every vector of the tenant in the item's space and model; reading them
from the database on every request costs ~5 KB a vector (``bench/bench_similar.py``). The
gateway keeps each recently used (tenant, space, model) as one matrix of unit rows, and checks
it against the database on every request with one query on a covering index (how many vectors,
the newest ``created_at``): vectors stored since the last check (new items, re-tagged ones) are
read and merged; any other change (a delete) reloads the set. The answers are the exact scan's.
Sets are evicted least recently used first to stay within ``ATELIER_SIMILAR_CACHE_MB``; a set
larger than the whole budget is scanned per request, as without a cache.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.db.models import Embedding

# A set this old is reloaded even when the check sees no change: a vector stored with an older
# timestamp than the newest (two workers' clocks) in the same moment as a delete would leave
# count and newest as they were.
MAX_AGE_S = 300.0

Key = tuple[str, str, str]  # tenant, space, model


@dataclass
class _Vectors:
    ids: list[str] = field(default_factory=list)
    row: dict[str, int] = field(default_factory=dict)
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    n: int = 0
    # What the database said at the last check.
    count: int = -1
    newest: datetime | None = None
    loaded_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fill(self, rows: list[tuple[str, np.ndarray]]) -> None:
        """Set or overwrite the rows of these ids (unit length), growing the matrix by
        doubling so that a stream of new items is not a copy per request."""
        if not rows:
            return
        dim = rows[0][1].shape[0]
        new = sum(1 for cid, _ in rows if cid not in self.row)
        if self.matrix.shape[1] != dim or self.n + new > self.matrix.shape[0]:
            capacity = max(self.n + new, 2 * self.matrix.shape[0] if self.n else 0)
            grown = np.empty((capacity, dim), dtype=np.float32)
            if self.matrix.shape[1] == dim:
                grown[: self.n] = self.matrix[: self.n]
            self.matrix = grown
        for cid, vec in rows:
            i = self.row.get(cid)
            if i is None:
                i = self.row[cid] = self.n
                self.ids.append(cid)
                self.n += 1
            self.matrix[i] = vec

    def clear(self) -> None:
        self.ids, self.row, self.n = [], {}, 0
        self.matrix = np.zeros((0, 0), dtype=np.float32)

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes)


class SimilarIndex:
    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self._sets: OrderedDict[Key, _Vectors] = OrderedDict()
        self._lock = threading.Lock()

    def nearest(
        self,
        session: Session,
        *,
        tenant_id: str,
        space: str,
        model: str,
        query: np.ndarray,
        exclude: str,
        limit: int,
    ) -> list[tuple[str, float]]:
        """Up to ``limit`` (id, cosine) of the set's vectors nearest to ``query``, best first,
        without ``exclude``."""
        key = (tenant_id, space, model)
        count, newest = _stamp(session, key)
        if count == 0:
            return []
        if count * query.shape[0] * 4 > self.budget:
            ids, matrix = _unit_rows(_read(session, key, since=None))
            return _top(ids, matrix, query, exclude, limit)
        vectors = self._get(key)
        with vectors.lock:
            _refresh(session, key, vectors, count, newest)
            found = _top(vectors.ids, vectors.matrix[: vectors.n], query, exclude, limit)
        self._evict(keep=key)
        return found

    def _get(self, key: Key) -> _Vectors:
        with self._lock:
            vectors = self._sets.get(key)
            if vectors is None:
                vectors = self._sets[key] = _Vectors()
            self._sets.move_to_end(key)
            return vectors

    def _evict(self, *, keep: Key) -> None:
        with self._lock:
            total = sum(v.nbytes for v in self._sets.values())
            for key in list(self._sets):
                if total <= self.budget:
                    break
                if key != keep:
                    total -= self._sets.pop(key).nbytes


def _refresh(
    session: Session, key: Key, vectors: _Vectors, count: int, newest: datetime | None
) -> None:
    young = time.monotonic() - vectors.loaded_at < MAX_AGE_S
    if young and (vectors.count, vectors.newest) == (count, newest) and vectors.n == count:
        return
    grown = (
        young
        and vectors.n > 0
        and vectors.newest is not None
        and newest is not None
        and count >= vectors.count
        and newest >= vectors.newest
    )
    if grown:
        # Rows at exactly the old newest are read again: overwriting them is harmless.
        ids, matrix = _unit_rows(_read(session, key, since=vectors.newest))
        vectors.fill(list(zip(ids, matrix, strict=True)))
        if vectors.n == count:
            vectors.count, vectors.newest = count, newest
            return
    # A delete, or vectors that arrived out of order: read the whole set again.
    ids, matrix = _unit_rows(_read(session, key, since=None))
    vectors.clear()
    vectors.fill(list(zip(ids, matrix, strict=True)))
    vectors.count, vectors.newest, vectors.loaded_at = count, newest, time.monotonic()


def _stamp(session: Session, key: Key) -> tuple[int, datetime | None]:
    tenant_id, space, model = key
    count, newest = session.execute(
        select(func.count(), func.max(Embedding.created_at)).where(
            Embedding.tenant_id == tenant_id, Embedding.space == space, Embedding.model == model
        )
    ).one()
    return int(count), newest


def _read(session: Session, key: Key, *, since: datetime | None) -> list[Any]:
    tenant_id, space, model = key
    query = select(Embedding.content_id, Embedding.vector).where(
        Embedding.tenant_id == tenant_id, Embedding.space == space, Embedding.model == model
    )
    if since is not None:
        query = query.where(Embedding.created_at >= since)
    return list(session.execute(query).all())


def _unit_rows(rows: list[Any]) -> tuple[list[str], np.ndarray]:
    if not rows:
        return [], np.zeros((0, 0), dtype=np.float32)
    ids = [cid for cid, _ in rows]
    matrix = np.frombuffer(b"".join(v for _, v in rows), dtype="<f4").reshape(len(rows), -1)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return ids, (matrix / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def _top(
    ids: list[str], matrix: np.ndarray, query: np.ndarray, exclude: str, limit: int
) -> list[tuple[str, float]]:
    if not ids:
        return []
    q = np.asarray(query, dtype=np.float32)
    scores = matrix @ (q / max(float(np.linalg.norm(q)), 1e-12))
    k = min(limit + 1, len(ids))  # one more, in case the excluded item is among them
    best = np.argpartition(-scores, k - 1)[:k] if k < len(ids) else np.arange(len(ids))
    best = best[np.argsort(-scores[best], kind="stable")]
    return [(ids[i], float(scores[i])) for i in best if ids[i] != exclude][:limit]

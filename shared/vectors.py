"""A tenant's stored embeddings of one space and model, held in memory as unit rows, and kept in
step with the database by reading only what changed.

Reading every vector of a tenant again on each change costs memory and time per vector (see
docs/perf.md). :meth:`VectorSet.refresh` asks the database one question on a
covering index (how many vectors, the newest ``created_at``: ``ix_embeddings_tenant_space_model_
created``); vectors stored since the last refresh (new items, re-tagged ones: the worker deletes
and inserts) are read and merged, and any other change (a delete) reads the set again. Used by
the gateway's similar-content endpoint and the recommender's content-based fallbacks.

A view (:meth:`VectorSet.view`) stays consistent while another thread refreshes the set: new ids
go into new lists, new rows past the view's end, and a reload swaps in new objects; only a
re-made vector is overwritten in place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.db.models import Embedding

# A set this old is read again even when the check sees no change: a vector stored with an older
# timestamp than the newest (two workers' clocks) in the same moment as a delete would leave
# count and newest as they were.
MAX_AGE_S = 300.0

Key = tuple[str, str, str]  # tenant, space, model


@dataclass
class VectorSet:
    ids: list[str] = field(default_factory=list)
    row: dict[str, int] = field(default_factory=dict)
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    n: int = 0
    # What the database said at the last refresh.
    count: int = -1
    newest: datetime | None = None
    loaded_at: float = 0.0

    def view(self) -> tuple[list[str], dict[str, int], np.ndarray]:
        """``(ids, id -> row, unit rows)``, consistent with each other."""
        return self.ids, self.row, self.matrix[: self.n]

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes)

    def refresh(
        self, session: Session, key: Key, stamped: tuple[int, datetime | None] | None = None
    ) -> None:
        """Bring the set up to what the database holds (``stamped``: :func:`stamp`, if the
        caller has asked already)."""
        count, newest = stamped or stamp(session, key)
        young = time.monotonic() - self.loaded_at < MAX_AGE_S
        if young and (self.count, self.newest) == (count, newest) and self.n == count:
            return
        grown = (
            young
            and self.n > 0
            and self.newest is not None
            and newest is not None
            and count >= self.count
            and newest >= self.newest
        )
        if grown:
            # Rows at exactly the old newest are read again: overwriting them is harmless.
            self._fill(*unit_rows(read(session, key, since=self.newest)))
            if self.n == count:
                self.count, self.newest = count, newest
                return
        # A delete, or vectors that arrived out of order: read the whole set again.
        ids, matrix = unit_rows(read(session, key, since=None))
        self.ids, self.row, self.n = [], {}, 0
        self.matrix = np.zeros((0, 0), dtype=np.float32)
        self._fill(ids, matrix)
        self.count, self.newest, self.loaded_at = count, newest, time.monotonic()

    def _fill(self, ids: list[str], matrix: np.ndarray) -> None:
        """Set or overwrite the rows of these ids, growing the matrix by doubling so that a
        stream of new items is not a copy per refresh."""
        if not ids:
            return
        dim = matrix.shape[1]
        new = sum(1 for cid in ids if cid not in self.row)
        if self.matrix.shape[1] != dim or self.n + new > self.matrix.shape[0]:
            capacity = max(self.n + new, 2 * self.matrix.shape[0] if self.n else 0)
            grown = np.empty((capacity, dim), dtype=np.float32)
            if self.matrix.shape[1] == dim:
                grown[: self.n] = self.matrix[: self.n]
            self.matrix = grown
        # New ids go into copies (views handed out earlier keep their own lists), and rows past
        # the old ``n`` are outside those views' matrices.
        all_ids, row, n = (
            (list(self.ids), dict(self.row), self.n) if new else (self.ids, self.row, self.n)
        )
        for cid, vec in zip(ids, matrix, strict=True):
            i = row.get(cid)
            if i is None:
                i = row[cid] = n
                all_ids.append(cid)
                n += 1
            self.matrix[i] = vec
        self.ids, self.row, self.n = all_ids, row, n


def stamp(session: Session, key: Key) -> tuple[int, datetime | None]:
    """How many vectors the set has in the database, and the newest one's ``created_at``."""
    tenant_id, space, model = key
    count, newest = session.execute(
        select(func.count(), func.max(Embedding.created_at)).where(
            Embedding.tenant_id == tenant_id, Embedding.space == space, Embedding.model == model
        )
    ).one()
    return int(count), newest


def read(session: Session, key: Key, *, since: datetime | None) -> list[Any]:
    tenant_id, space, model = key
    query = select(Embedding.content_id, Embedding.vector).where(
        Embedding.tenant_id == tenant_id, Embedding.space == space, Embedding.model == model
    )
    if since is not None:
        query = query.where(Embedding.created_at >= since)
    return list(session.execute(query).all())


def unit_rows(rows: list[Any]) -> tuple[list[str], np.ndarray]:
    """``(ids, vectors scaled to unit length)`` of ``(content_id, float32 bytes)`` rows."""
    if not rows:
        return [], np.zeros((0, 0), dtype=np.float32)
    ids = [cid for cid, _ in rows]
    matrix = np.frombuffer(b"".join(v for _, v in rows), dtype="<f4").reshape(len(rows), -1)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return ids, (matrix / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)

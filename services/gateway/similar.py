"""Nearest neighbours for ``GET /v1/content/{id}/similar``, from tenant vectors kept in memory.

Each recently used (tenant, space, model) is a :class:`shared.vectors.VectorSet`, checked
against the database on every request with one query on a covering index and brought up to date
by reading only what changed (``bench/bench_similar.py``); the answers are the exact scan's.
Sets are evicted least recently used first to stay within ``ATELIER_SIMILAR_CACHE_MB``; a set
larger than the whole budget is read from the database per request, as without a cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.gateway import crud
from services.gateway.errors import Conflict, Invalid
from shared import vectors
from shared.db.models import ContentItem, ContentStatus, Embedding
from shared.schemas.tagging import SimilarItem, SimilarPage, Space
from shared.vectors import Key, VectorSet


@dataclass
class _Entry:
    vectors: VectorSet = field(default_factory=VectorSet)
    lock: threading.Lock = field(default_factory=threading.Lock)


class SimilarIndex:
    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self._sets: OrderedDict[Key, _Entry] = OrderedDict()
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
        stamped = vectors.stamp(session, key)
        if stamped[0] == 0:
            return []
        if stamped[0] * query.shape[0] * 4 > self.budget:
            ids, matrix = vectors.unit_rows(vectors.read(session, key, since=None))
            return _top(ids, matrix, query, exclude, limit)
        entry = self._get(key)
        with entry.lock:
            entry.vectors.refresh(session, key, stamped)
            ids, _, matrix = entry.vectors.view()
            found = _top(ids, matrix, query, exclude, limit)
        self._evict(keep=key)
        return found

    def _get(self, key: Key) -> _Entry:
        with self._lock:
            entry = self._sets.get(key)
            if entry is None:
                entry = self._sets[key] = _Entry()
            self._sets.move_to_end(key)
            return entry

    def _evict(self, *, keep: Key) -> None:
        with self._lock:
            total = sum(e.vectors.nbytes for e in self._sets.values())
            for key in list(self._sets):
                if total <= self.budget:
                    break
                if key != keep:
                    total -= self._sets.pop(key).vectors.nbytes


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


def similar_page(
    session: Session,
    index: SimilarIndex,
    *,
    tenant_id: str,
    content_id: str,
    space: Space,
    limit: int,
) -> SimilarPage:
    """The tenant's items nearest to this one in ``space``, best first."""
    item = crud.get_content(session, tenant_id=tenant_id, content_id=content_id)
    own = session.get(Embedding, (item.id, space))
    if own is None:
        if item.status == ContentStatus.pending:
            raise Conflict(
                f"content {content_id} is still being tagged; its {space} embedding will exist "
                "when its job has finished",
                code="not_ready",
            )
        raise Invalid(
            f"content {content_id} has no {space} embedding"
            + (" (it has no image)" if space == "image" else " (it has no text or title)"),
        )
    hits = index.nearest(
        session,
        tenant_id=tenant_id,
        space=space,
        model=own.model,
        query=np.frombuffer(own.vector, dtype="<f4"),
        exclude=item.id,
        limit=limit,
    )
    ids = [cid for cid, _ in hits]
    found = {
        c.id: c for c in session.scalars(select(ContentItem).where(ContentItem.id.in_(ids))).all()
    }
    return SimilarPage(
        content_id=item.id,
        space=space,
        model=own.model,
        items=[
            SimilarItem(
                id=cid,
                external_id=found[cid].external_id,
                kind=found[cid].kind,
                title=found[cid].title,
                score=round(score, 6),
            )
            for cid, score in hits
            if cid in found
        ],
    )

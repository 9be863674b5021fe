"""Near-duplicate images by pHash: blocks looked up in the index, then exact Hamming distances."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import ARRAY, Integer, any_, bindparam, select, union
from sqlalchemy.orm import Session

from shared import phash_index
from shared.db.models import ContentItem
from shared.imaging import hamming_many, hash_array


def find_near_duplicate(session: Session, item: ContentItem, *, max_distance: int) -> str | None:
    """The oldest other item of the tenant whose pHash is within ``max_distance`` bits."""
    if item.phash is None:
        return None
    scan = DuplicateScan.load(session, [item], max_distance=max_distance)
    return scan.match(item, max_distance=max_distance)


MAX_LOOKUP_VALUES = 20_000


class DuplicateScan:
    """The rows that can be near-duplicates of a batch's images (by pHash block, or the tenant's
    every pHash), read in one query per batch, answering as one full scan per item would.

    Items are matched in the order :meth:`match` is called; an item of the batch that was
    matched already counts with its new pHash and duplicate_of, one not yet matched with what
    the database held (as when each item flushed and queried in turn). Rows are in age order,
    so the first hit is the oldest.
    """

    def __init__(self, rows: Sequence[Any], pending: set[str]) -> None:
        self.ids = [r.id for r in rows]
        self.tenants = np.array([r.tenant_id for r in rows], dtype=object)
        self.canonical = [r.duplicate_of or r.id for r in rows]
        # The batch's own items take part only once matched, whatever pHash the gateway stored
        # at upload: a later item of the batch must not claim an earlier one as its duplicate.
        self.valid = np.array(
            [r.phash is not None and r.id not in pending for r in rows], dtype=bool
        )
        self.hashes = hash_array([r.phash or "0" for r in rows])
        self.row = {cid: i for i, cid in enumerate(self.ids)}

    @classmethod
    def load(
        cls, session: Session, items: Sequence[ContentItem], *, max_distance: int
    ) -> DuplicateScan:
        """The batch's own rows and every row of their tenants that can be within
        ``max_distance`` of one of the batch's pHashes (an indexed lookup by pHash block:
        shared/phash_index.py), or, past the index's radius, every row with a pHash."""
        ids = [it.id for it in items if it.id is not None]
        cols = (
            ContentItem.id,
            ContentItem.tenant_id,
            ContentItem.phash,
            ContentItem.duplicate_of,
            ContentItem.created_at,
        )
        parts: list[Any] = [select(*cols).where(ContentItem.id.in_(ids))] if ids else []
        lookups: list[Any] = []
        if phash_index.indexable(max_distance):
            radius = phash_index.block_radius(max_distance)
            by_tenant: dict[str, list[str]] = {}
            for it in items:
                if it.phash is not None:
                    by_tenant.setdefault(it.tenant_id, []).append(it.phash)
            looked_up = 0
            for tenant, hashes in by_tenant.items():
                split = [phash_index.blocks(h) for h in hashes]
                for k, name in enumerate(phash_index.COLUMNS):
                    values = sorted(
                        {v for b in split for v in phash_index.neighbours(b[k], radius)}
                    )
                    looked_up += len(values)
                    column = getattr(ContentItem, name)
                    lookups.append(
                        select(*cols).where(
                            ContentItem.tenant_id == tenant, _one_of(session, column, values)
                        )
                    )
            # A wide radius on a large batch would pass SQLite's limit of 32,766 parameters.
            if looked_up > MAX_LOOKUP_VALUES:
                lookups = []
        if lookups:
            parts += lookups
        else:
            tenants = {it.tenant_id for it in items}
            parts.append(
                select(*cols).where(
                    ContentItem.tenant_id.in_(tenants), ContentItem.phash.is_not(None)
                )
            )
        if not parts:
            return cls([], set())
        found = union(*parts).subquery()
        query = select(found.c.id, found.c.tenant_id, found.c.phash, found.c.duplicate_of)
        # The SELECT reads what the database holds, not the batch's unflushed new pHashes:
        # the batch's rows take part only once matched, with their new values. Through the
        # connection, and without returning created_at, because a batch of copies of the same
        # photos reads every copy, and ORM rows and decoded timestamps cost more than the query.
        with session.no_autoflush:
            rows = session.connection().execute(query.order_by(found.c.created_at, found.c.id))
            return cls(rows.all(), set(ids))

    def match(self, item: ContentItem, *, max_distance: int) -> str | None:
        if item.phash is None:
            return None
        hit = self.valid & (self.tenants == item.tenant_id)
        hit &= hamming_many(item.phash, self.hashes) <= max_distance
        own = self.row.get(item.id)
        if own is not None:
            hit[own] = False
        # An item that is already a duplicate of this one does not make this one a duplicate
        # (re-tagging an original would otherwise point it at itself).
        found = next(
            (self.canonical[i] for i in np.flatnonzero(hit) if self.canonical[i] != item.id),
            None,
        )
        if own is not None:
            self.hashes[own] = int(item.phash, 16)
            self.valid[own] = True
            self.canonical[own] = found or item.id
        return found


def _one_of(session: Session, column: Any, values: list[int]) -> Any:
    """``column IN values``; on PostgreSQL as ``= ANY(array)``, one parameter instead of ~500
    (binding them one by one took longer than the query: bench/bench_duplicates.py)."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(Integer)))
    return column.in_(values)

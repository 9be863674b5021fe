"""Near-duplicate lookup by pHash block: never misses a pair the full scan finds, reads a
small part of a large tenant, and keeps the blocks in step with the pHash."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import insert, select

from shared import phash_index
from shared.auth import create_tenant
from shared.db.models import ContentItem, ContentKind, new_id, utcnow
from shared.db.session import session_scope
from workers.tagging import duplicates
from workers.tagging.duplicates import DuplicateScan


def _flip(h: int, bits: int, rng: random.Random) -> int:
    for b in rng.sample(range(64), bits):
        h ^= 1 << b
    return h


def _hex(h: int) -> str:
    return f"{h:016x}"


@pytest.mark.parametrize("distance", [0, 3, 6, 8, 11])
def test_some_block_is_within_the_radius_of_every_near_pair(distance: int) -> None:
    rng = random.Random(distance)
    radius = phash_index.block_radius(distance)
    for _ in range(500):
        a = rng.getrandbits(64)
        b = _flip(a, rng.randint(0, distance), rng)
        qa, qb = phash_index.blocks(_hex(a)), phash_index.blocks(_hex(b))
        assert any(
            qb[k] in phash_index.neighbours(qa[k], radius) for k in range(phash_index.BLOCKS)
        ), (hex(a), hex(b))


def test_neighbours_are_exactly_the_values_within_the_radius() -> None:
    for radius in range(phash_index.MAX_RADIUS + 1):
        got = phash_index.neighbours(0xA5C3, radius)
        assert len(got) == len(set(got))
        assert all(bin(v ^ 0xA5C3).count("1") <= radius for v in got)
        expected = sum(1 for v in range(1 << 16) if bin(v ^ 0xA5C3).count("1") <= radius)
        assert len(got) == expected


def test_blocks_follow_the_phash_on_every_write() -> None:
    item = ContentItem(tenant_id="t", kind=ContentKind.image, phash="0123456789abcdef")
    assert (item.phash_b0, item.phash_b1, item.phash_b2, item.phash_b3) == (
        0xCDEF, 0x89AB, 0x4567, 0x0123
    )  # fmt: skip
    item.phash = None
    assert (item.phash_b0, item.phash_b1, item.phash_b2, item.phash_b3) == (None,) * 4


def test_indexed_scan_answers_as_the_full_scan(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tenant of 4,000 stored images in clusters of near-identical pHashes (re-encodes,
    crops), another tenant holding copies of them, and a batch of 60 new images: some near a
    stored one, some near an earlier image of the same batch, some new. Every batch item gets
    the duplicate the full scan gives it, and the lookup reads a small part of the tenant."""
    rng = random.Random(7)
    d = 6
    with session_scope(sqlite_url) as s:
        tenant = create_tenant(s, name=f"mih-{uuid.uuid4().hex[:8]}").id
        other = create_tenant(s, name=f"mih-o-{uuid.uuid4().hex[:8]}").id
        centres = [rng.getrandbits(64) for _ in range(400)]
        start = utcnow() - timedelta(days=1)
        rows = []
        for i in range(4000):
            h = _flip(centres[i % 400], rng.randint(0, 9), rng)
            rows.append(
                {"id": new_id(), "tenant_id": tenant, "kind": "image", "status": "ready",
                 "phash": _hex(h), "created_at": start + timedelta(seconds=i),
                 "updated_at": start, "meta": {}}
            )  # fmt: skip
        # Core inserts bypass the ORM validator: the blocks are written as the migration does.
        for r in rows:
            r.update(phash_index.columns(r["phash"]))
        foreign = [dict(r, id=new_id(), tenant_id=other) for r in rows[:200]]
        s.execute(insert(ContentItem), rows + foreign)
        s.commit()

        batch_hashes = []
        for j in range(60):
            if j % 3 == 0:
                h = _flip(centres[rng.randrange(400)], rng.randint(0, 8), rng)
            elif j % 3 == 1 and batch_hashes:
                h = _flip(int(batch_hashes[rng.randrange(len(batch_hashes))], 16), 2, rng)
            else:
                h = rng.getrandbits(64)
            batch_hashes.append(_hex(h))
        items = [ContentItem(tenant_id=tenant, kind=ContentKind.image) for _ in batch_hashes]
        s.add_all(items)
        s.commit()
        for item, h in zip(items, batch_hashes, strict=True):
            item.phash = h  # set as prepare_images does: new values, not flushed yet

        indexed = DuplicateScan.load(s, items, max_distance=d)
        got = [indexed.match(it, max_distance=d) for it in items]
        with monkeypatch.context() as m:
            m.setattr(duplicates.phash_index, "indexable", lambda _d: False)
            full = DuplicateScan.load(s, items, max_distance=d)
        want = [full.match(it, max_distance=d) for it in items]

        assert got == want
        matched = [g for g in got if g is not None]
        assert len(matched) >= 20, "the batch should hit stored and in-batch duplicates"
        assert any(g in {it.id for it in items} for g in matched)
        assert not {r["id"] for r in foreign} & set(matched)
        # The lookup read a small part of the tenant.
        assert len(indexed.ids) < len(full.ids) / 5

        # Past the index's radius the full scan still answers.
        assert not phash_index.indexable(12)
        wide = DuplicateScan.load(s, items[:1], max_distance=12)
        assert len(wide.ids) == len(rows) + 1  # every stored pHash, and the item itself
        # So does a batch whose block values would pass the query's parameter limit.
        many = items + [ContentItem(tenant_id=tenant, kind=ContentKind.image) for _ in range(60)]
        for extra in many[len(items) :]:
            extra.phash = _hex(rng.getrandbits(64))
        assert phash_index.indexable(10)
        wide = DuplicateScan.load(s, many, max_distance=10)
        assert len(wide.ids) == len(rows) + len(items)
        s.rollback()
        assert s.scalar(select(ContentItem.phash).where(ContentItem.id == items[0].id)) is None

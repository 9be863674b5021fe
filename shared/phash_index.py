"""Multi-index hashing for near-duplicate search on 64-bit pHashes (Norouzi et al., 2012).

Scanning every pHash of a tenant per tagging job costs O(tenant size), at large tenants more than
the model (see docs/perf.md). Instead each pHash is
also stored as four 16-bit blocks, each indexed with the tenant. Two hashes within Hamming
distance ``d`` differ in at most ``d // 4`` bits of at least one block (pigeonhole), so the
candidates are the rows whose block ``k`` lies within ``d // 4`` bits of the query's block ``k``
for some ``k``: 17 values a block at the default ``d = 6``, four indexed lookups. The exact
distance is then checked on the candidates, so the answer is the full scan's.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import combinations

BLOCKS = 4
BLOCK_BITS = 16
BLOCK_MASK = (1 << BLOCK_BITS) - 1
# The content_items columns that hold the blocks, in block order.
COLUMNS = tuple(f"phash_b{k}" for k in range(BLOCKS))
# Radius 3 is 697 values a block and item; beyond that a scan is cheaper than the lookups.
MAX_RADIUS = 2


def blocks(phash: str) -> tuple[int, ...]:
    """The four 16-bit blocks of a 16-hex-digit pHash, low bits first."""
    h = int(phash, 16)
    return tuple((h >> (BLOCK_BITS * k)) & BLOCK_MASK for k in range(BLOCKS))


def columns(phash: str | None) -> dict[str, int | None]:
    """The block columns' values for a pHash (all None for None)."""
    values = blocks(phash) if phash is not None else (None,) * BLOCKS
    return dict(zip(COLUMNS, values, strict=True))


def block_radius(max_distance: int) -> int:
    """Bits a block may differ by so that no pair within ``max_distance`` is missed."""
    return max(0, max_distance) // BLOCKS


def indexable(max_distance: int) -> bool:
    return block_radius(max_distance) <= MAX_RADIUS


@lru_cache(maxsize=4)
def _flips(radius: int) -> tuple[int, ...]:
    """Every 16-bit mask with at most ``radius`` bits set."""
    out = [0]
    for r in range(1, radius + 1):
        for bits in combinations(range(BLOCK_BITS), r):
            out.append(sum(1 << b for b in bits))
    return tuple(out)


def neighbours(value: int, radius: int) -> list[int]:
    """Block values within ``radius`` bits of ``value`` (``value`` included)."""
    return [value ^ m for m in _flips(radius)]

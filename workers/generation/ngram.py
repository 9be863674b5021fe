"""Interpolated Kneser-Ney byte n-gram: counting, export, serving-side distribution, mixing.

numpy only, so the trainer (workers/training/rnn.py) and the server (workers/generation/text.py,
which must not import torch) share one implementation: the distribution the server samples from
is, to rounding, the one whose validation bits were measured in training.

A k-gram is the integer code ``b1*256^(k-1) + ... + bk`` (7 bytes fit in an int64), so every table
is a sorted int64 array looked up with ``np.searchsorted``. History before the start of a stream is
padded with byte 0, the document separator, which is also what the server primes a prompt with.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

VOCAB_SIZE = 256
MAX_ORDER = 7
NGRAM_FILE = "ngram.npz"
NGRAM_FORMAT = 2  # 1: one discount per order; 2: three (D1, D2, D3+)
# Uncompressed size above which singletons are pruned: a ~1 MB corpus needs a few MB for a 5-gram.
MAX_TABLE_BYTES = 50 * 1024 * 1024

_BYTES = np.arange(VOCAB_SIZE, dtype=np.int64)


def _lookup(codes: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``values`` at the position of ``query`` in the sorted ``codes``, 0 where it is absent."""
    if len(codes) == 0:
        return np.zeros(query.shape, values.dtype)
    idx = np.minimum(np.searchsorted(codes, query), len(codes) - 1)
    return np.where(codes[idx] == query, values[idx], 0)


def grams(stream: np.ndarray, k: int) -> np.ndarray:
    """Integer code of the k-gram ending at every position (history padded with byte 0)."""
    padded = np.concatenate([np.zeros(k - 1, np.int64), stream.astype(np.int64)])
    code = np.zeros(len(stream), np.int64)
    for j in range(k):
        code = code * 256 + padded[j : j + len(stream)]
    return code


@dataclass
class _Level:
    """One order: k-gram codes with their (continuation) counts and per-context sums."""

    codes: np.ndarray  # sorted int64 k-gram codes
    counts: np.ndarray  # raw counts (highest order) or continuation counts N1+(. g)
    discounts: np.ndarray  # [D1, D2, D3+]: subtracted from counts of 1, 2 and 3 or more
    ctx_codes: np.ndarray = field(init=False)  # sorted (k-1)-gram codes seen as a context
    ctx_total: np.ndarray = field(init=False)  # sum of counts after that context
    ctx_gamma: np.ndarray = field(init=False)  # discounted mass: D1 N1 + D2 N2 + D3+ N3+

    def __post_init__(self) -> None:
        # codes are sorted, so codes // 256 is sorted too and np.unique only groups runs.
        self.ctx_codes, inverse = np.unique(self.codes // 256, return_inverse=True)
        self.ctx_total = np.bincount(inverse, weights=self.counts).astype(np.float64)
        self.ctx_gamma = np.bincount(inverse, weights=self.discount(self.counts))

    def discount(self, counts: np.ndarray) -> np.ndarray:
        """What is subtracted from each count (0 for an unseen gram)."""
        d = np.concatenate([[0.0], self.discounts])
        discounts: np.ndarray = d[np.minimum(counts, 3).astype(np.int64)]
        return discounts


def modified_discounts(counts: np.ndarray) -> np.ndarray:
    """Chen & Goodman's three discounts from the counts-of-counts n1..n4 of one order."""
    n = [float(np.sum(counts == i)) for i in range(1, 5)]
    if min(n) == 0:
        # Too little data for the estimates (a tiny corpus): one absolute discount for all.
        return np.full(3, n[0] / (n[0] + 2 * n[1]) if n[0] + n[1] > 0 else 0.75)
    y = n[0] / (n[0] + 2 * n[1])
    d = np.array([1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2]])
    # The estimates stay within (0, count) on real corpora; clip so odd data cannot break that.
    clipped: np.ndarray = np.clip(d, 0.05, np.array([0.95, 1.95, 2.95]))
    return clipped


class KneserNey:
    """Interpolated modified Kneser-Ney over bytes (Chen & Goodman: D1, D2, D3+ per order).

    The highest order uses raw counts, lower orders continuation counts, and the unigram is
    interpolated with the uniform distribution over 256 bytes, so every byte has a non-zero
    probability. Discounts come from the unpruned counts-of-counts; pruning only removes
    entries, and each order stays normalised because a context's removed mass goes to the order
    below through its (recomputed) totals.
    """

    def __init__(self, levels: list[_Level], pruned: list[int] | None = None) -> None:
        self.levels = levels  # levels[k - 1] is order k
        self.order = len(levels)
        self.pruned = pruned or []
        u = levels[0]
        total = float(u.ctx_total.sum())
        # Order 1 does not depend on the context: computed once for the server.
        counts = _lookup(u.codes, u.counts, _BYTES)
        self._unigram = (counts - u.discount(counts) + u.ctx_gamma.sum() / VOCAB_SIZE) / total

    # --- counting ---------------------------------------------------------------------------

    @classmethod
    def fit(cls, train: np.ndarray, order: int = 5, max_bytes: int = MAX_TABLE_BYTES) -> KneserNey:
        """Count ``train``; if the tables would exceed ``max_bytes``, drop singletons from the
        highest order down until they fit (recorded in ``pruned``)."""
        if not 1 <= order <= MAX_ORDER:
            raise ValueError(f"ngram order must be in 1..{MAX_ORDER}")
        if len(train) < order:
            raise ValueError(f"need at least {order} training bytes for a {order}-gram")
        tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        # Grams reaching into the padding before the stream are not counted: "0000x" would
        # otherwise claim that every empty-prompt sample starts like the first training text.
        tables[order] = np.unique(grams(train, order)[order - 1 :], return_counts=True)
        for k in range(order - 1, 0, -1):
            # N1+(. g): distinct left extensions of each k-gram g, from the unique (k+1)-grams.
            tables[k] = np.unique(tables[k + 1][0] % (256**k), return_counts=True)
        discounts = {k: modified_discounts(counts) for k, (_, counts) in tables.items()}
        pruned = []
        for k in range(order, 1, -1):
            if sum(c.nbytes + n.nbytes for c, n in tables.values()) <= max_bytes:
                break
            keep = tables[k][1] > 1
            tables[k] = (tables[k][0][keep], tables[k][1][keep])
            pruned.append(k)
        levels = [_Level(tables[k][0], tables[k][1], discounts[k]) for k in range(1, order + 1)]
        return cls(levels, pruned)

    # --- scoring (training) -----------------------------------------------------------------

    def probs(self, stream: np.ndarray) -> np.ndarray:
        """P(byte | previous order-1 bytes) at every position of ``stream``."""
        prob: np.ndarray = self._unigram[stream.astype(np.int64)]
        for k in range(2, self.order + 1):
            level = self.levels[k - 1]
            full = grams(stream, k)
            c_total = _lookup(level.ctx_codes, level.ctx_total, full // 256)
            c_gamma = _lookup(level.ctx_codes, level.ctx_gamma, full // 256)
            count = _lookup(level.codes, level.counts, full)
            prob = self._interpolate(level, c_total, c_gamma, count, prob)
        return prob

    def context_counts(self, stream: np.ndarray) -> np.ndarray:
        """How often the longest context before every position of ``stream`` was seen in
        training (the mixture gate's feature; 0 for the first position's all-padding context
        unless training saw it)."""
        top = self.levels[-1]
        if self.order == 1:
            return np.full(len(stream), float(top.ctx_total.sum()))
        before = np.concatenate([[0], stream[:-1].astype(np.int64)])
        return _lookup(top.ctx_codes, top.ctx_total, grams(before, self.order - 1))

    # --- serving ----------------------------------------------------------------------------

    def served_context_counts(self, context: np.ndarray) -> np.ndarray:
        """:meth:`context_counts` for the rows of ``context[batch, >= order-1]``."""
        top = self.levels[-1]
        if self.order == 1:
            return np.full(context.shape[0], float(top.ctx_total.sum()))
        code = np.zeros(context.shape[0], np.int64)
        for j in range(context.shape[1] - (self.order - 1), context.shape[1]):
            code = code * 256 + context[:, j].astype(np.int64)
        return _lookup(top.ctx_codes, top.ctx_total, code)

    def distribution(self, context: np.ndarray) -> np.ndarray:
        """Next-byte distribution ``[batch, 256]`` after ``context[batch, >= order-1]`` bytes
        (the last order-1 columns are used; pad short histories on the left with 0)."""
        batch = context.shape[0]
        ctx = context[:, context.shape[1] - (self.order - 1) :].astype(np.int64)
        rows = np.arange(batch)
        prob = np.broadcast_to(self._unigram, (batch, VOCAB_SIZE))
        for k in range(2, self.order + 1):
            level = self.levels[k - 1]
            code = np.zeros(batch, np.int64)
            for j in range(ctx.shape[1] - (k - 1), ctx.shape[1]):
                code = code * 256 + ctx[:, j]
            # The k-grams after one context are a contiguous run of the sorted codes: find the
            # run and scatter it, instead of 256 binary searches per row.
            lo = np.searchsorted(level.codes, code * 256)
            n = np.searchsorted(level.codes, code * 256 + 256) - lo
            starts = np.repeat(lo - np.cumsum(n) + n, n)
            idx = np.arange(int(n.sum())) + starts
            count = np.zeros((batch, VOCAB_SIZE))
            count[np.repeat(rows, n), level.codes[idx] % 256] = level.counts[idx]
            c_total = _lookup(level.ctx_codes, level.ctx_total, code)[:, None]
            c_gamma = _lookup(level.ctx_codes, level.ctx_gamma, code)[:, None]
            prob = self._interpolate(level, c_total, c_gamma, count, prob)
        return np.asarray(prob)

    @staticmethod
    def _interpolate(
        level: _Level,
        c_total: np.ndarray,
        c_gamma: np.ndarray,
        count: np.ndarray,
        lower: np.ndarray,
    ) -> np.ndarray:
        # Same arithmetic for training scores and served distributions, so they agree to rounding.
        seen = c_total > 0
        safe = np.where(seen, c_total, 1.0)
        mixed = (count - level.discount(count) + c_gamma * lower) / safe
        return np.where(seen, mixed, lower)

    # --- files ------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Versioned ``.npz``: codes and counts per order plus discounts (context sums are
        recomputed on load, which is cheaper than shipping them)."""
        arrays: dict[str, np.ndarray] = {
            "format": np.array(NGRAM_FORMAT),
            "order": np.array(self.order),
            "discounts": np.stack([lv.discounts for lv in self.levels]),
            "pruned": np.array(self.pruned, np.int64),
        }
        for k, lv in enumerate(self.levels, start=1):
            arrays[f"codes_{k}"] = lv.codes.astype(np.int64)
            # Counts of a ~1 MB corpus are far below 2^32; uint32 halves their share of the file.
            arrays[f"counts_{k}"] = lv.counts.astype(np.uint32)
        buf = io.BytesIO()
        np.savez_compressed(buf, allow_pickle=False, **arrays)
        path.write_bytes(buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> KneserNey:
        with np.load(path, allow_pickle=False) as z:
            fmt = int(z["format"])
            if fmt not in (1, NGRAM_FORMAT):
                raise ValueError(
                    f"{path.name}: n-gram format {fmt}, this server reads 1..{NGRAM_FORMAT}"
                )
            order = int(z["order"])
            # Format 1 had one discount per order: the same value for counts of 1, 2 and 3+.
            discounts = np.broadcast_to(z["discounts"].reshape(order, -1), (order, 3))
            levels = [
                _Level(z[f"codes_{k}"], z[f"counts_{k}"].astype(np.int64), discounts[k - 1].copy())
                for k in range(1, order + 1)
            ]
            return cls(levels, [int(k) for k in z["pruned"]])

    def describe(self) -> dict[str, Any]:
        return {
            "order": self.order,
            "entries": [len(lv.codes) for lv in self.levels],
            "pruned_singletons_of_orders": self.pruned,
        }


def kneser_ney_probs(train: np.ndarray, val: np.ndarray, order: int = 5) -> np.ndarray:
    """P(byte | previous order-1 bytes) at every position of ``val``, counted on ``train``."""
    return KneserNey.fit(train, order, max_bytes=1 << 62).probs(val)


def kneser_ney_bpc(train: np.ndarray, val: np.ndarray, order: int = 5) -> float:
    """Bits per byte of :func:`kneser_ney_probs` on ``val``."""
    return float(-np.mean(np.log2(kneser_ney_probs(train, val, order))))

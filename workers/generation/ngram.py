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
NGRAM_FORMAT = 1
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
    discount: float
    ctx_codes: np.ndarray = field(init=False)  # sorted (k-1)-gram codes seen as a context
    ctx_total: np.ndarray = field(init=False)  # sum of counts after that context
    ctx_types: np.ndarray = field(init=False)  # distinct bytes seen after that context

    def __post_init__(self) -> None:
        # codes are sorted, so codes // 256 is sorted too and np.unique only groups runs.
        self.ctx_codes, inverse = np.unique(self.codes // 256, return_inverse=True)
        self.ctx_total = np.bincount(inverse, weights=self.counts).astype(np.float64)
        self.ctx_types = np.bincount(inverse).astype(np.float64)


class KneserNey:
    """Interpolated Kneser-Ney (Chen & Goodman, one discount per order) over bytes.

    The highest order uses raw counts, lower orders continuation counts, and the unigram is
    interpolated with the uniform distribution over 256 bytes, so every byte has a non-zero
    probability. Discounts are ``n1 / (n1 + 2 n2)`` of the unpruned counts; pruning only removes
    entries, and each order stays normalised because a context's removed mass goes to the order
    below through its (recomputed) totals.
    """

    def __init__(self, levels: list[_Level], pruned: list[int] | None = None) -> None:
        self.levels = levels  # levels[k - 1] is order k
        self.order = len(levels)
        self.pruned = pruned or []
        u = levels[0]
        total, types = float(u.ctx_total.sum()), float(len(u.codes))
        # Order 1 does not depend on the context: computed once for the server.
        self._unigram = (
            np.maximum(_lookup(u.codes, u.counts, _BYTES) - u.discount, 0)
            + u.discount * types / VOCAB_SIZE
        ) / total

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
        discounts = {}
        for k, (_, counts) in tables.items():
            n1, n2 = np.sum(counts == 1), np.sum(counts == 2)
            discounts[k] = float(n1 / (n1 + 2 * n2)) if n1 + n2 > 0 else 0.75
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
        prob = self._unigram[stream.astype(np.int64)]
        for k in range(2, self.order + 1):
            level = self.levels[k - 1]
            full = grams(stream, k)
            c_total = _lookup(level.ctx_codes, level.ctx_total, full // 256)
            c_types = _lookup(level.ctx_codes, level.ctx_types, full // 256)
            count = _lookup(level.codes, level.counts, full)
            prob = self._interpolate(level.discount, c_total, c_types, count, prob)
        return prob

    # --- serving ----------------------------------------------------------------------------

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
            c_types = _lookup(level.ctx_codes, level.ctx_types, code)[:, None]
            prob = self._interpolate(level.discount, c_total, c_types, count, prob)
        return np.asarray(prob)

    @staticmethod
    def _interpolate(
        d: float, c_total: np.ndarray, c_types: np.ndarray, count: np.ndarray, lower: np.ndarray
    ) -> np.ndarray:
        # Same arithmetic for training scores and served distributions, so they agree to rounding.
        seen = c_total > 0
        safe = np.where(seen, c_total, 1.0)
        mixed = (np.maximum(count - d, 0) + d * c_types * lower) / safe
        return np.where(seen, mixed, lower)

    # --- files ------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Versioned ``.npz``: codes and counts per order plus discounts (context sums are
        recomputed on load, which is cheaper than shipping them)."""
        arrays: dict[str, np.ndarray] = {
            "format": np.array(NGRAM_FORMAT),
            "order": np.array(self.order),
            "discounts": np.array([lv.discount for lv in self.levels]),
            "pruned": np.array(self.pruned, np.int64),
        }
        for k, lv in enumerate(self.levels, start=1):
            arrays[f"codes_{k}"] = lv.codes.astype(np.int64)
            # Counts of a ~1 MB corpus are far below 2^32; uint32 halves their share of the file.
            arrays[f"counts_{k}"] = lv.counts.astype(np.uint32)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        path.write_bytes(buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> KneserNey:
        with np.load(path, allow_pickle=False) as z:
            fmt = int(z["format"])
            if fmt != NGRAM_FORMAT:
                raise ValueError(
                    f"{path.name}: n-gram format {fmt}, this server reads {NGRAM_FORMAT}"
                )
            order = int(z["order"])
            discounts = z["discounts"]
            levels = [
                _Level(z[f"codes_{k}"], z[f"counts_{k}"].astype(np.int64), float(discounts[k - 1]))
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
    return bits(kneser_ney_probs(train, val, order))


# ---------------------------------------------------------------------------------------------
# mixing with the RNN


def bits(p: np.ndarray) -> float:
    """Mean bits per byte of the probabilities given to the true bytes."""
    return float(-np.mean(np.log2(p)))


def best_mixture_weight(p_rnn: np.ndarray, p_ngram: np.ndarray) -> tuple[float, float]:
    """``(lam, bits)`` minimising the bits of ``lam * p_rnn + (1 - lam) * p_ngram``.

    The bits are convex in lam (minus the log of a linear function), so a golden-section search
    finds the minimum; the ends 0 and 1 are candidates too, so the mixture is never worse than
    either model alone on these positions.
    """

    def f(lam: float) -> float:
        return bits(lam * p_rnn + (1.0 - lam) * p_ngram)

    ratio = (5**0.5 - 1) / 2
    lo, hi = 0.0, 1.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = f(a), f(b)
    while hi - lo > 1e-4:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = f(b)
    candidates = [(f(0.0), 0.0), (f(1.0), 1.0), (fa, a), (fb, b)]
    best_bits, best_lam = min(candidates)
    return best_lam, best_bits

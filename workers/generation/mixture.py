"""Mixing the RNN with the n-gram: a weight per bucket of how much the n-gram has seen.

The served next-byte distribution is ``lam * P_rnn + (1 - lam) * P_kn`` where lam depends on
the context: how often the n-gram saw its longest context (``order - 1`` bytes) in training. A
context seen hundreds of times is one the n-gram predicts well; a context never seen leaves it
guessing from shorter ones, and the RNN should take over. Each position belongs to exactly one
bucket, so the weights are fitted independently per bucket, each by a one-dimensional convex
search, and the gated mixture is never worse on the fitting positions than the best fixed weight
(or either model alone).

numpy only: the trainer fits the gate and the server (no torch) applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Lower bounds of the buckets of the longest context's training count: unseen, once, twice,
# then doubling. Every bucket holds enough validation positions on a ~1 MB corpus.
DEFAULT_EDGES = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)
# A bucket with fewer positions than this takes the global weight: too few to fit its own.
MIN_BUCKET_POSITIONS = 200


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


@dataclass(frozen=True)
class MixtureGate:
    """lam per bucket of the n-gram's longest-context count (``edges`` are lower bounds)."""

    edges: tuple[float, ...]
    weights: tuple[float, ...]
    mean_weight: float  # the best single weight, for servers that know no gate

    @classmethod
    def fixed(cls, weight: float) -> MixtureGate:
        return cls((0.0,), (weight,), weight)

    @classmethod
    def fit(
        cls,
        p_rnn: np.ndarray,
        p_ngram: np.ndarray,
        context_counts: np.ndarray,
        edges: tuple[float, ...] = DEFAULT_EDGES,
    ) -> MixtureGate:
        """Weights minimising the bits of the gated mixture at these positions."""
        mean_weight, _ = best_mixture_weight(p_rnn, p_ngram)
        bucket = _bucket(edges, context_counts)
        weights = []
        for k in range(len(edges)):
            m = bucket == k
            if m.sum() < MIN_BUCKET_POSITIONS:
                weights.append(mean_weight)
            else:
                weights.append(best_mixture_weight(p_rnn[m], p_ngram[m])[0])
        return cls(tuple(edges), tuple(weights), mean_weight)

    def weight(self, context_counts: np.ndarray) -> np.ndarray:
        weights: np.ndarray = np.asarray(self.weights)[_bucket(self.edges, context_counts)]
        return weights

    def mix(self, p_rnn: np.ndarray, p_ngram: np.ndarray, context_counts: np.ndarray) -> np.ndarray:
        lam = self.weight(context_counts)
        if p_rnn.ndim == 2:  # a distribution per row
            lam = lam[:, None]
        mixed: np.ndarray = lam * p_rnn + (1.0 - lam) * p_ngram
        return mixed

    @property
    def uses_ngram(self) -> bool:
        return any(w < 1.0 for w in self.weights)

    def to_json(self) -> dict[str, Any]:
        return {
            "feature": "ngram_longest_context_count",
            "edges": list(self.edges),
            "weights": [round(w, 6) for w in self.weights],
        }

    @classmethod
    def from_manifest(cls, mixture: dict[str, Any]) -> MixtureGate:
        """The gate of a manifest's ``extra.mixture``; a version without one has one weight."""
        weight = float(mixture.get("weight", 1.0))
        gate = mixture.get("gate")
        if not gate:
            return cls.fixed(weight)
        return cls(
            tuple(float(e) for e in gate["edges"]),
            tuple(float(w) for w in gate["weights"]),
            weight,
        )


def _bucket(edges: tuple[float, ...], counts: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.asarray(edges), counts, side="right") - 1

"""Candidate generation: the request's query, collaborative, popular and cold-start candidates,
filters, and a fast top-k."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ranking.data import user_row
from services.recommender.reads import ItemRow
from services.recommender.store import ContentIndex, LoadedModel

# History items considered when explaining a recommendation ("similar to ...").
MAX_REASON_ITEMS = 20
# Content similarity is on another scale than CF scores; cold items enter at this share of the
# best CF score times their cosine similarity, so a close content match ranks among CF hits.
COLD_WEIGHT = 0.5


@dataclass(frozen=True)
class Query:
    limit: int = 10
    exclude_seen: bool = True
    tags: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()
    exclude: tuple[str, ...] = ()
    diversity: float = 0.0
    seed_items: tuple[str, ...] = ()
    mode: str = "blend"

    @property
    def filtered(self) -> bool:
        return bool(self.tags or self.kinds or self.metadata)


@dataclass
class Candidate:
    cid: str
    score: float
    source: str
    anchor: str | None = None  # the item that explains it
    reason: str | None = None


def passes(row: ItemRow, q: Query) -> bool:
    if q.kinds and row.kind not in q.kinds:
        return False
    if q.tags and not set(q.tags) <= row.tags:
        return False
    for key, want in q.metadata:
        have = row.meta.get(key)
        if have is None:
            return False
        values = have if isinstance(have, list) else [have]
        if not any(str(v) == want for v in values):
            return False
    return True


# Every TOP_SAMPLE-th score is looked at first; see `top_indices`.
TOP_SAMPLE = 16


def top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best finite scores, best first.

    A full argpartition of every score is a visible share of a request. The k-th best of every 16th
    score is a lower bound of the k-th best of all of them, so the exact top-k lies among the
    scores at or above it (about 16 * k of them): partition the sample, then only those (an
    order of magnitude faster; see docs/perf.md).
    """
    n = len(scores)
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    sample = scores[::TOP_SAMPLE]
    if len(sample) > 4 * k:
        bound = np.partition(sample, len(sample) - k)[len(sample) - k]
        pool = np.flatnonzero(scores >= bound) if np.isfinite(bound) else np.arange(n)
    else:
        pool = np.arange(n)
    if len(pool) > k:
        pool = pool[np.argpartition(-scores[pool], k - 1)[:k]]
    pool = pool[np.isfinite(scores[pool])]
    return pool[np.argsort(-scores[pool], kind="stable")]


def cf_candidates(
    lm: LoadedModel, positives: dict[str, float], banned: set[str], pool: int, source: str
) -> tuple[list[Candidate], np.ndarray | None]:
    """The model's best items for the user's folded-in history, each with the history item
    that contributes most to it (the explanation)."""
    pairs = [(lm.item_index[c], w) for c, w in positives.items() if c in lm.item_index]
    if not pairs:
        return [], None
    row = user_row(pairs, lm.model.n_items)
    scores = lm.model.score_users(row)[0]
    banned_idx = [lm.item_index[c] for c in banned if c in lm.item_index]
    if banned_idx:
        scores[banned_idx] = -np.inf
    top = top_indices(scores, pool)
    hist = np.array([p[0] for p in pairs[:MAX_REASON_ITEMS]], dtype=np.int64)
    anchors: list[str | None] = [None] * len(top)
    if len(top) and len(hist):
        sims = lm.model.pair_similarity(hist, top)
        weights = np.array([p[1] for p in pairs[:MAX_REASON_ITEMS]], dtype=np.float32)
        contrib = sims * weights[:, None]
        best = np.argmax(contrib, axis=0)
        anchors = [lm.item_ids[hist[b]] if contrib[b, j] > 0 else None for j, b in enumerate(best)]
    cands = [
        Candidate(lm.item_ids[i], float(scores[i]), source, anchors[j]) for j, i in enumerate(top)
    ]
    return cands, scores


def popular_candidates(
    lm: LoadedModel | None, sql_trending: list[str], banned: set[str], pool: int
) -> list[Candidate]:
    """Trending (else all-time popular) items of the model, or straight from SQL before the
    tenant's first model exists."""
    if lm is not None:
        scores = lm.trending.counts.copy()
        source = "trending"
        if not np.any(scores > 0):
            scores, source = lm.fallback.counts.copy(), "popular"
        idx = [lm.item_index[c] for c in banned if c in lm.item_index]
        scores[idx] = -np.inf
        scores[scores <= 0] = -np.inf
        return [
            Candidate(lm.item_ids[i], float(scores[i]), source) for i in top_indices(scores, pool)
        ]
    ranked = [c for c in sql_trending if c not in banned][:pool]
    return [Candidate(c, float(len(ranked) - n), "popular") for n, c in enumerate(ranked)]


def cold_candidates(
    content: ContentIndex,
    lm: LoadedModel | None,
    profile: Sequence[str],
    banned: set[str],
    pool: int,
    scale: float,
) -> list[Candidate]:
    """New items (not in the CF model) that resemble the profile in content."""
    if not content or not profile:
        return []
    out = []
    for cid, (sim, anchor) in content.scores(profile, pool * 4).items():
        if cid in banned or sim <= 0:
            continue
        known = (
            lm is not None and cid in lm.item_index and lm.fallback.counts[lm.item_index[cid]] > 0
        )
        if known:
            continue
        out.append(Candidate(cid, COLD_WEIGHT * scale * sim, "content", anchor))
    out.sort(key=lambda c: -c.score)
    return out[:pool]

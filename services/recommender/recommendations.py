"""Recommendation assembly: one tenant's answer to one request.

A request reads the user's latest interactions from SQL and scores them against the model
(fold-in), so events that arrived after training change the next answer. Candidates
(candidates.py) are then filtered, diversified and explained here.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from sqlalchemy.orm import Session

from services.recommender.candidates import (
    Candidate,
    Query,
    cf_candidates,
    cold_candidates,
    passes,
    popular_candidates,
)
from services.recommender.errors import ItemNotFound
from services.recommender.reads import ItemRow, fetch_rows, read_history, resolve_ids
from services.recommender.store import TenantState
from shared.schemas.recommendations import RecommendationList, RecommendedItem


class Recommendations:
    """One tenant's answer to one request; built from the store's state and the SQL history."""

    def __init__(self, session: Session, tenant_id: str, st: TenantState) -> None:
        self.session = session
        self.tenant_id = tenant_id
        self.st = st
        self.lm = st.model

    # -- history -----------------------------------------------------------------------------
    def history(self, user_id: str) -> tuple[dict[str, float], list[str]]:
        """Per-item total weight of the user's newest events, and items newest first."""
        return read_history(self.session, self.tenant_id, user_id, self.st.config.event_weights)

    # -- selection ---------------------------------------------------------------------------
    def finish(self, cands: list[Candidate], q: Query) -> list[RecommendedItem]:
        """Filter, diversify, explain; fetches item rows only for what it may return."""
        cands = sorted(cands, key=lambda c: -c.score)
        need = q.limit if q.diversity <= 0 else max(q.limit * 5, 50)
        chosen: list[Candidate] = []
        rows: dict[str, ItemRow] = {}
        start = 0
        batch = need if not q.filtered else max(need * 4, 100)
        while start < len(cands) and len(chosen) < need:
            chunk = cands[start : start + batch]
            start += batch
            wanted = [c.cid for c in chunk] + [c.anchor for c in chunk if c.anchor]
            rows.update(self._rows(wanted, with_tags=bool(q.tags)))
            chosen += [c for c in chunk if c.cid in rows and passes(rows[c.cid], q)]
            batch *= 4
        chosen = chosen[:need]
        if q.diversity > 0 and len(chosen) > q.limit:
            chosen = self._mmr(chosen, q.limit, q.diversity)
        chosen = chosen[: q.limit]
        return [self._item(c, rows) for c in chosen]

    def _rows(self, cids: Iterable[str], *, with_tags: bool) -> dict[str, ItemRow]:
        cache = self.st.rows
        out: dict[str, ItemRow] = {}
        missing = []
        for cid in dict.fromkeys(cids):
            row = cache.get(cid)
            if row is not None and (row.has_tags or not with_tags):
                out[cid] = row
            else:
                missing.append(cid)
        if missing:
            fetched = fetch_rows(self.session, self.tenant_id, missing, with_tags=with_tags)
            out.update(fetched)
            if len(cache) < 200_000:
                cache.update(fetched)
        return out

    def _mmr(self, cands: list[Candidate], k: int, diversity: float) -> list[Candidate]:
        """Maximal marginal relevance: trade relevance for dissimilarity to what is chosen."""
        ids = [c.cid for c in cands]
        sim = self.st.content.pairwise(ids)
        if sim is None and self.lm is not None:
            # No content embeddings: fall back to the model's own item similarity.
            idx = np.array([self.lm.item_index.get(c, -1) for c in ids])
            sim = np.zeros((len(ids), len(ids)), dtype=np.float32)
            ok = idx >= 0
            if ok.sum() > 1:
                sub = self.lm.model.pair_similarity(idx[ok], idx[ok])
                peak = float(np.abs(sub).max()) or 1.0
                sim[np.ix_(ok, ok)] = sub / peak
        if sim is None:
            return cands[:k]
        rel = np.array([c.score for c in cands], dtype=np.float64)
        span = rel.max() - rel.min()
        rel = (rel - rel.min()) / span if span > 0 else np.ones_like(rel)
        lam = 1.0 - diversity
        picked: list[int] = []
        max_sim = np.full(len(cands), -np.inf)
        left = np.ones(len(cands), dtype=bool)
        for _ in range(min(k, len(cands))):
            penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
            gain = np.where(left, lam * rel - (1 - lam) * penalty, -np.inf)
            j = int(np.argmax(gain))
            picked.append(j)
            left[j] = False
            max_sim = np.maximum(max_sim, sim[:, j])
        return [cands[j] for j in picked]

    def _item(self, c: Candidate, rows: dict[str, ItemRow]) -> RecommendedItem:
        row = rows[c.cid]
        anchor = rows.get(c.anchor) if c.anchor else None
        if c.reason is not None:
            reason = c.reason
        elif c.source == "trending":
            reason = "trending now"
        elif c.source == "popular":
            reason = "popular"
        elif anchor is None:
            reason = "matches your taste"
        elif c.source == "content":
            reason = f"new, and like {anchor.label}"
        elif c.source == "session":
            reason = f"goes with {anchor.label}"
        else:
            reason = f"similar to {anchor.label}"
        return RecommendedItem(
            id=row.id,
            external_id=row.external_id,
            title=row.title,
            kind=row.kind,
            score=round(c.score, 6),
            reason=reason,
            source=c.source,
        )

    # -- endpoints ---------------------------------------------------------------------------
    def for_user(self, user_id: str, q: Query) -> RecommendationList:
        totals, order = self.history(user_id)
        seeds = resolve_ids(self.session, self.tenant_id, q.seed_items).values()
        banned = {c for c, w in totals.items() if w < 0}
        if q.exclude_seen:
            banned |= set(totals) | set(seeds)
        banned |= set(resolve_ids(self.session, self.tenant_id, q.exclude).values())
        # Newest first, so explanations and the content profile favour recent taste.
        positives = {c: totals[c] for c in order if totals[c] > 0}
        like = max(self.st.config.event_weights.get("like", 1.0), 1.0)
        for s in seeds:
            positives[s] = positives.get(s, 0.0) + like
        source = "cf" if totals else "session"
        pool = q.limit * (4 if q.filtered else 1) + (50 if q.diversity > 0 else 0) + 20
        cands: list[Candidate] = []
        if positives and self.lm is not None:
            cands, _ = cf_candidates(self.lm, positives, banned, pool, source)
        scale = max((c.score for c in cands), default=1.0)
        cold = cold_candidates(
            self.st.content, self.lm, list(positives), banned, pool, scale if scale > 0 else 1.0
        )
        cands += cold
        if len(cands) < pool:
            have = {c.cid for c in cands}
            padding = popular_candidates(self.lm, self.st.sql_trending, banned | have, pool)
            if cands:
                # Popular items pad the list below every personal candidate, in their order.
                floor = min(c.score for c in cands)
                top = max((p.score for p in padding), default=0.0) or 1.0
                for p in padding:
                    p.score = floor - 1.0 - (1.0 - p.score / top)
            cands += padding
        items = self.finish(cands, q)
        return RecommendationList(
            user_id=user_id, model_version=self.lm.version if self.lm else None, items=items
        )

    def similar(self, item_key: str, q: Query) -> RecommendationList:
        cid = resolve_ids(self.session, self.tenant_id, [item_key]).get(item_key)
        if cid is None:
            raise ItemNotFound(item_key)
        banned = {cid} | set(resolve_ids(self.session, self.tenant_id, q.exclude).values())
        pool = q.limit * (4 if q.filtered else 1) + (50 if q.diversity > 0 else 0) + 20
        cf: dict[str, float] = {}
        lm = self.lm
        if q.mode in ("cf", "blend") and lm is not None and cid in lm.item_index:
            idx, vals = lm.model.similar_items(lm.item_index[cid], pool + len(banned))
            peak = float(np.max(np.abs(vals))) if len(vals) else 1.0
            cf = {lm.item_ids[i]: float(v) / (peak or 1.0) for i, v in zip(idx, vals, strict=True)}
        content: dict[str, float] = {}
        if q.mode in ("content", "blend") and self.st.content:
            content = {c: s for c, (s, _) in self.st.content.scores([cid], pool).items()}
        merged: dict[str, Candidate] = {}
        both = bool(cf) and bool(content)
        for c, s in cf.items():
            merged[c] = Candidate(c, s * (0.5 if both else 1.0), "cf", reason="liked together")
        for c, s in content.items():
            part = s * (0.5 if both else 1.0)
            if c in merged:
                merged[c].score += part
                merged[c].reason = "liked together, similar content"
            else:
                merged[c] = Candidate(c, part, "content", reason="similar content")
        cands = [c for c in merged.values() if c.cid not in banned and np.isfinite(c.score)]
        if not cands:
            cands = popular_candidates(lm, self.st.sql_trending, banned, pool)
        items = self.finish(cands, q)
        return RecommendationList(
            item_id=item_key, model_version=lm.version if lm else None, items=items
        )

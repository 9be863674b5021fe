"""Model store: per-tenant models with hot reload, tenant config and content index.

The SQL store is the source of truth: ``model_versions.active`` says which artefact directory
``<models_dir>/recommender/<tenant_id>/<version>/`` a tenant is served from. The store
re-checks that at most every ``model_check_interval_s`` per tenant, so a new training run or a
rollback (``:activate``) takes effect without a restart. A version that fails to load is
logged and skipped; the tenant keeps the model it had (or falls back to trending).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ranking.models import ModelFormatError, Popularity, Recommender, load_model
from services.recommender.reads import ItemRow
from shared.db.models import Embedding, Interaction, ModelVersion
from shared.model_versions import recommender_model_name
from shared.recommender_config import TenantConfig, get_config
from shared.vectors import Key, VectorSet

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    version: str
    model: Recommender
    fallback: Popularity
    trending: Popularity
    item_ids: list[str]
    item_index: dict[str, int]
    # When the artefact was written (its meta.json's mtime): the model age metric's origin.
    written_at: float = 0.0

    @classmethod
    def load(cls, directory: Path) -> LoadedModel:
        try:
            meta = json.loads((directory / "meta.json").read_text())
            item_ids = json.loads((directory / "items.json").read_text())
        except (OSError, ValueError) as exc:
            raise ModelFormatError(f"cannot read {directory}: {exc}") from exc
        model = load_model(directory / "model")
        fallback = load_model(directory / "fallback")
        trending = load_model(directory / "trending")
        if not isinstance(fallback, Popularity) or not isinstance(trending, Popularity):
            raise ModelFormatError(f"{directory}: fallback models are not popularity models")
        if model.n_items != len(item_ids):
            raise ModelFormatError(f"{directory}: model and item list disagree")
        return cls(
            version=str(meta["version"]),
            model=model,
            fallback=fallback,
            trending=trending,
            item_ids=list(item_ids),
            item_index={cid: i for i, cid in enumerate(item_ids)},
            written_at=(directory / "meta.json").stat().st_mtime,
        )


@dataclass
class ContentIndex:
    """Unit-normalised content embeddings of a tenant's items, one matrix per space."""

    spaces: dict[str, tuple[list[str], dict[str, int], np.ndarray]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.spaces)

    def has(self, cid: str) -> bool:
        return any(cid in index for _, index, _ in self.spaces.values())

    def scores(self, profile: Sequence[str], k: int) -> dict[str, tuple[float, str]]:
        """Top-``k`` items by cosine to the mean of ``profile``'s vectors: cid -> (sim, anchor).

        The anchor is the profile item closest to the result, for the explanation.
        """
        out: dict[str, tuple[float, str]] = {}
        for ids, index, mat in self.spaces.values():
            rows = [index[c] for c in profile if c in index]
            if not rows:
                continue
            anchors = mat[rows]
            query = anchors.mean(axis=0)
            norm = float(np.linalg.norm(query))
            if norm == 0:
                continue
            sims = mat @ (query / norm)
            sims[rows] = -np.inf
            kk = min(k, len(ids))
            top = np.argpartition(-sims, kk - 1)[:kk]
            for j in top:
                s = float(sims[j])
                if not np.isfinite(s):
                    continue
                anchor = rows[int(np.argmax(anchors @ mat[j]))]
                if s > out.get(ids[j], (-np.inf, ""))[0]:
                    out[ids[j]] = (s, ids[anchor])
        return out

    def pairwise(self, cids: Sequence[str]) -> np.ndarray | None:
        """Cosine similarity between items (0 where a pair shares no space)."""
        n = len(cids)
        sim = np.zeros((n, n), dtype=np.float32)
        found = False
        for _, index, mat in self.spaces.values():
            pos = [(i, index[c]) for i, c in enumerate(cids) if c in index]
            if len(pos) < 2:
                continue
            found = True
            a = np.array([p[0] for p in pos])
            vecs = mat[[p[1] for p in pos]]
            sim[np.ix_(a, a)] = np.maximum(sim[np.ix_(a, a)], vecs @ vecs.T)
        return sim if found else None


@dataclass
class TenantState:
    checked_at: float = -1e18
    model: LoadedModel | None = None
    config: TenantConfig = field(default_factory=TenantConfig)
    content: ContentIndex = field(default_factory=ContentIndex)
    # space -> the set behind ``content`` (shared/vectors.py), refreshed by reading what changed.
    vector_sets: dict[str, tuple[Key, VectorSet]] = field(default_factory=dict)
    sql_trending: list[str] = field(default_factory=list)
    failed_version: str | None = None
    # Item rows (ids, title, kind, metadata, tags) seen by recent requests; emptied at every
    # refresh, so edits show up within the check interval and memory stays bounded.
    rows: dict[str, ItemRow] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class ModelStore:
    """Per-tenant models, config and content index, re-validated every ``check_interval_s``."""

    def __init__(
        self, models_dir: Path, sessions: sessionmaker[Session], *, check_interval_s: float
    ) -> None:
        self.models_dir = Path(models_dir)
        self.sessions = sessions
        self.check_interval_s = check_interval_s
        self._tenants: dict[str, TenantState] = {}
        self._lock = threading.Lock()

    def model_ages(self) -> dict[str, float]:
        """Seconds since each served tenant's model was written, by tenant id."""
        now = time.time()
        with self._lock:
            states = list(self._tenants.items())
        return {t: now - st.model.written_at for t, st in states if st.model is not None}

    def state(self, session: Session, tenant_id: str) -> TenantState:
        with self._lock:
            st = self._tenants.setdefault(tenant_id, TenantState())
        if time.monotonic() - st.checked_at < self.check_interval_s:
            return st
        # While one request refreshes a tenant that already has a state, the others answer
        # from that state rather than queue behind the refresh's queries (a p99 spike every
        # check interval otherwise); only a tenant's very first request waits.
        if not st.lock.acquire(blocking=st.checked_at < 0):
            return st
        try:
            if time.monotonic() - st.checked_at >= self.check_interval_s:
                self._refresh(session, tenant_id, st)
                st.checked_at = time.monotonic()
        finally:
            st.lock.release()
        return st

    def _refresh(self, session: Session, tenant_id: str, st: TenantState) -> None:
        st.rows = {}
        st.config = get_config(session, tenant_id=tenant_id)
        active = session.scalars(
            select(ModelVersion.version)
            .where(
                ModelVersion.name == recommender_model_name(tenant_id),
                ModelVersion.active.is_(True),
            )
            .order_by(ModelVersion.version.desc())
            .limit(1)
        ).first()
        current = st.model.version if st.model else None
        if active is None:
            st.model = None
        elif active != current and active != st.failed_version:
            directory = self.models_dir / "recommender" / tenant_id / active
            try:
                st.model = LoadedModel.load(directory)
                st.failed_version = None
                log.info("tenant %s now served by model %s", tenant_id, active)
            except (ModelFormatError, OSError) as exc:
                # Keep serving what we had; retrying a broken artefact every check is noise.
                st.failed_version = active
                log.error("cannot load model %s for tenant %s: %s", active, tenant_id, exc)
        if st.model is None:
            st.sql_trending = _sql_popular(session, tenant_id, st.config, limit=1000)
        _refresh_content(session, tenant_id, st)


def _sql_popular(session: Session, tenant_id: str, cfg: TenantConfig, *, limit: int) -> list[str]:
    """Most-interacted items straight from SQL, for tenants whose first model is not ready."""
    positive = [t for t, w in cfg.event_weights.items() if w > 0]
    rows = session.execute(
        select(Interaction.item_id, func.count(func.distinct(Interaction.user_id)).label("n"))
        .where(Interaction.tenant_id == tenant_id, Interaction.event_type.in_(positive))
        .group_by(Interaction.item_id)
        .order_by(func.count(func.distinct(Interaction.user_id)).desc(), Interaction.item_id)
        .limit(limit)
    )
    return [r[0] for r in rows]


def _refresh_content(session: Session, tenant_id: str, st: TenantState) -> None:
    """The tenant's vectors, one model a space: the one most of its items have (after a model
    upgrade, the old one until re-tagging has moved most items to the new); vectors of two
    models are not comparable."""
    chosen: dict[str, tuple[int, str]] = {}
    for space, model, n in session.execute(
        select(Embedding.space, Embedding.model, func.count())
        .where(Embedding.tenant_id == tenant_id)
        .group_by(Embedding.space, Embedding.model)
    ):
        chosen[space] = max(chosen.get(space, (-1, "")), (int(n), model))
    sets: dict[str, tuple[Key, VectorSet]] = {}
    for space, (_, model) in chosen.items():
        key = (tenant_id, space, model)
        held = st.vector_sets.get(space)
        vectors = held[1] if held is not None and held[0] == key else VectorSet()
        vectors.refresh(session, key)
        sets[space] = (key, vectors)
    st.vector_sets = sets
    st.content = ContentIndex({space: vs.view() for space, (_, vs) in sets.items() if vs.n})

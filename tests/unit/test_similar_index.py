"""The similar-content cache answers as the exact scan does, through new, re-made and deleted
vectors, and reads only what changed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

import shared.vectors as vectors_mod
from services.gateway.similar import SimilarIndex
from shared.auth import create_tenant
from shared.db.models import ContentItem, ContentKind, Embedding, utcnow
from shared.db.session import session_scope

DIM = 16
MODEL = "image_tagger:test-1"


@pytest.fixture
def session(sqlite_url: str) -> Iterator[Session]:
    with session_scope(sqlite_url) as s:
        yield s


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every vector read the cache makes: ``since`` (None for a whole set)."""
    seen: list[Any] = []
    real = vectors_mod.read

    def spy(session: Session, key: Any, *, since: Any) -> list[Any]:
        seen.append(since)
        return real(session, key, since=since)

    monkeypatch.setattr(vectors_mod, "read", spy)
    return seen


def _tenant(session: Session) -> str:
    return create_tenant(session, name=f"t-{uuid.uuid4().hex[:8]}").id


def _add(session: Session, tenant: str, vectors: np.ndarray, *, model: str = MODEL) -> list[str]:
    ids = []
    for vec in vectors:
        item = ContentItem(tenant_id=tenant, kind=ContentKind.image)
        session.add(item)
        session.flush()
        session.add(
            Embedding(
                content_id=item.id, space="image", tenant_id=tenant, model=model,
                dim=DIM, vector=np.asarray(vec, "<f4").tobytes(), created_at=utcnow(),
            )
        )  # fmt: skip
        ids.append(item.id)
    session.commit()
    return ids


def _exact(session: Session, tenant: str, query: np.ndarray, exclude: str, limit: int) -> list:
    rows = session.execute(
        select(Embedding.content_id, Embedding.vector).where(
            Embedding.tenant_id == tenant, Embedding.model == MODEL, Embedding.space == "image"
        )
    ).all()
    scored = []
    for cid, blob in rows:
        v = np.frombuffer(blob, "<f4")
        if cid != exclude:
            scored.append((cid, float(v @ query / np.linalg.norm(v) / np.linalg.norm(query))))
    return sorted(scored, key=lambda r: -r[1])[:limit]


def _nearest(index: SimilarIndex, session: Session, tenant: str, query: np.ndarray, **kw: Any):
    return index.nearest(
        session, tenant_id=tenant, space="image", model=kw.pop("model", MODEL),
        query=query, exclude=kw.pop("exclude", ""), limit=kw.pop("limit", 5),
    )  # fmt: skip


def _same(got: list, want: list) -> None:
    assert [cid for cid, _ in got] == [cid for cid, _ in want]
    assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)


def test_cache_follows_new_remade_and_deleted_vectors(session: Session, reads: list) -> None:
    rng = np.random.default_rng(0)
    tenant = _tenant(session)
    ids = _add(session, tenant, rng.standard_normal((40, DIM)))
    index = SimilarIndex(10 * 2**20)
    q = rng.standard_normal(DIM).astype(np.float32)

    _same(
        _nearest(index, session, tenant, q, exclude=ids[0]), _exact(session, tenant, q, ids[0], 5)
    )
    assert reads == [None]
    # Nothing changed: answered from memory.
    _same(_nearest(index, session, tenant, q), _exact(session, tenant, q, "", 5))
    assert reads == [None]

    # New items (one of them the nearest there is): read incrementally.
    new = _add(session, tenant, np.vstack([q * 3, rng.standard_normal((4, DIM))]))
    got = _nearest(index, session, tenant, q)
    _same(got, _exact(session, tenant, q, "", 5))
    assert got[0][0] == new[0]
    assert len(reads) == 2 and reads[1] is not None

    # Re-tagged: the old vector replaced by a new one (delete + insert, as the worker does).
    session.execute(delete(Embedding).where(Embedding.content_id == ids[5]))
    session.add(
        Embedding(content_id=ids[5], space="image", tenant_id=tenant, model=MODEL, dim=DIM,
                  vector=(-q).astype("<f4").tobytes(), created_at=utcnow())
    )  # fmt: skip
    session.commit()
    _same(_nearest(index, session, tenant, -q), _exact(session, tenant, -q, "", 5))
    assert _nearest(index, session, tenant, -q)[0][0] == ids[5]
    assert len(reads) == 3 and reads[2] is not None

    # A deleted item: the set is read again, and the item is gone.
    session.execute(delete(ContentItem).where(ContentItem.id == new[0]))
    session.commit()
    got = _nearest(index, session, tenant, q, limit=50)
    _same(got, _exact(session, tenant, q, "", 50))
    assert new[0] not in [cid for cid, _ in got]
    assert reads[3] is None


def test_models_and_tenants_are_separate_sets(session: Session) -> None:
    rng = np.random.default_rng(1)
    a, b = _tenant(session), _tenant(session)
    a_ids = _add(session, a, rng.standard_normal((10, DIM)))
    b_ids = _add(session, b, rng.standard_normal((10, DIM)))
    other = _add(session, a, rng.standard_normal((10, DIM)), model="image_tagger:test-2")
    index = SimilarIndex(10 * 2**20)
    q = rng.standard_normal(DIM).astype(np.float32)
    assert {c for c, _ in _nearest(index, session, a, q, limit=50)} == set(a_ids)
    assert {c for c, _ in _nearest(index, session, b, q, limit=50)} == set(b_ids)
    got = _nearest(index, session, a, q, limit=50, model="image_tagger:test-2")
    assert {c for c, _ in got} == set(other)


def test_exclude_limit_and_empty(session: Session) -> None:
    rng = np.random.default_rng(2)
    tenant = _tenant(session)
    index = SimilarIndex(10 * 2**20)
    q = rng.standard_normal(DIM).astype(np.float32)
    assert _nearest(index, session, tenant, q) == []
    ids = _add(session, tenant, np.vstack([q, rng.standard_normal((2, DIM))]))
    got = _nearest(index, session, tenant, q, exclude=ids[0], limit=10)
    assert [c for c, _ in got] == [c for c, _ in _exact(session, tenant, q, ids[0], 10)]
    assert len(got) == 2 and ids[0] not in [c for c, _ in got]
    assert len(_nearest(index, session, tenant, q, limit=1)) == 1


def test_a_set_over_the_budget_is_scanned_every_time(session: Session, reads: list) -> None:
    rng = np.random.default_rng(3)
    tenant = _tenant(session)
    _add(session, tenant, rng.standard_normal((20, DIM)))
    index = SimilarIndex(20 * DIM * 4 - 1)
    q = rng.standard_normal(DIM).astype(np.float32)
    for _ in range(2):
        _same(_nearest(index, session, tenant, q), _exact(session, tenant, q, "", 5))
    assert reads == [None, None]
    disabled = SimilarIndex(0)
    _same(_nearest(disabled, session, tenant, q), _exact(session, tenant, q, "", 5))


def test_least_recently_used_sets_are_evicted(session: Session) -> None:
    rng = np.random.default_rng(4)
    a, b = _tenant(session), _tenant(session)
    _add(session, a, rng.standard_normal((20, DIM)))
    _add(session, b, rng.standard_normal((20, DIM)))
    index = SimilarIndex(30 * DIM * 4)  # one set of 20 fits, two do not
    q = rng.standard_normal(DIM).astype(np.float32)
    _nearest(index, session, a, q)
    _nearest(index, session, b, q)
    assert list(index._sets) == [(b, "image", MODEL)]
    _same(_nearest(index, session, a, q), _exact(session, a, q, "", 5))
    assert list(index._sets) == [(a, "image", MODEL)]


def test_a_view_stays_whole_while_the_set_grows(session: Session) -> None:
    """The recommender hands a view to requests while a later refresh adds vectors."""
    from shared.vectors import VectorSet

    rng = np.random.default_rng(5)
    tenant = _tenant(session)
    _add(session, tenant, rng.standard_normal((8, DIM)))
    key = (tenant, "image", MODEL)
    vectors = VectorSet()
    vectors.refresh(session, key)
    ids, row, matrix = vectors.view()
    new = _add(session, tenant, rng.standard_normal((20, DIM)))
    vectors.refresh(session, key)
    assert len(ids) == matrix.shape[0] == 8
    assert all(row[c] < 8 for c in ids) and not set(new) & set(row)
    ids2, row2, matrix2 = vectors.view()
    assert len(ids2) == matrix2.shape[0] == 28 and set(new) <= set(row2)
    assert np.allclose(np.linalg.norm(matrix2, axis=1), 1.0, atol=1e-5)

"""Writing a model's results: embeddings, and automatic tags that respect people's decisions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from shared.db.models import ContentItem, Embedding, Tag, TagOrigin, new_id, utcnow


def store_embeddings(
    session: Session,
    rows: Sequence[tuple[ContentItem, np.ndarray]],
    *,
    space: str,
    model: str,
) -> None:
    """Replace the ``space`` vectors of many items: one DELETE and one batched INSERT."""
    if not rows:
        return
    ids = [item.id for item, _ in rows]
    session.execute(
        delete(Embedding).where(Embedding.content_id.in_(ids), Embedding.space == space)
    )
    values = []
    for item, vector in rows:
        vec = np.asarray(vector, dtype="<f4").ravel()
        values.append(
            {
                "content_id": item.id,
                "space": space,
                "tenant_id": item.tenant_id,
                "model": model,
                "dim": int(vec.shape[0]),
                "vector": vec.tobytes(),
                "created_at": utcnow(),
            }
        )
    session.execute(insert(Embedding), values)


def replace_auto_tags_many(
    session: Session,
    rows: Sequence[tuple[ContentItem, list[tuple[str, float]]]],
    *,
    source: str,
    levels: Sequence[Mapping[str, str]] | None = None,
) -> int:
    """Replace this source's automatic tags on many items; never re-add a tag a person
    rejected or set. Three statements for the whole batch, whatever its size.

    ``levels`` (one mapping per row, by tag name) is the image model's "class"/"concept"."""
    if not rows:
        return 0
    ids = [item.id for item, _ in rows]
    session.execute(
        delete(Tag).where(
            Tag.content_id.in_(ids), Tag.source == source, Tag.origin == TagOrigin.auto
        )
    )
    human: dict[str, set[str]] = {}
    for cid, name in session.execute(
        select(Tag.content_id, Tag.name).where(
            Tag.content_id.in_(ids), Tag.origin != TagOrigin.auto
        )
    ):
        human.setdefault(cid, set()).add(name)
    values = []
    now = utcnow()
    for k, (item, tags) in enumerate(rows):
        best: dict[str, float] = {}
        level: dict[str, str] = {}
        kept = human.get(item.id, set())
        row_levels = levels[k] if levels is not None else {}
        for raw, score in tags:
            name = raw.strip().lower()[:200]
            if name and name not in kept:
                best[name] = max(best.get(name, 0.0), float(score))
                if raw in row_levels:
                    level[name] = row_levels[raw]
        values += [
            {
                "id": new_id(),
                "tenant_id": item.tenant_id,
                "content_id": item.id,
                "name": name,
                "score": round(score, 6),
                "source": source,
                "origin": TagOrigin.auto,
                "level": level.get(name),
                "created_at": now,
                "updated_at": now,
            }
            for name, score in best.items()
        ]
    if values:
        session.execute(insert(Tag), values)
    # Loaded items would otherwise keep showing their old tag lists in this session.
    for item, _ in rows:
        session.expire(item, ["tags"])
    return len(values)

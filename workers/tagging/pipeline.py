"""What a tagging job does to one or many content items. Plain functions; tests call them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from shared.db.models import (
    Asset,
    ContentItem,
    ContentStatus,
    Embedding,
    Tag,
    TagOrigin,
    VocabularyEntry,
)
from workers.context import WorkerContext
from workers.tagging.imaging import hamming, open_image, perceptual_hash, thumbnail_webp

log = logging.getLogger(__name__)

IMAGE_MODEL = "image_tagger"
TEXT_MODEL = "text_embedder"


@dataclass
class Prepared:
    item: ContentItem
    image: Any | None  # PIL image, decoded once per job
    text: str | None


def mark_content_failed(session: Session, content_id: str) -> None:
    item = session.get(ContentItem, content_id)
    if item is not None:
        item.status = ContentStatus.failed
        session.commit()


def prepare_image(ctx: WorkerContext, session: Session, item: ContentItem) -> Any | None:
    """Decode the original, store size, thumbnail and pHash, and flag near-duplicates."""
    original = next((a for a in item.assets if a.role == "original"), None)
    if original is None:
        return None
    with ctx.storage.open(original.storage_key) as f:
        image = open_image(f)
    original.width, original.height = image.size
    if not any(a.role == "thumbnail" for a in item.assets):
        data, w, h = thumbnail_webp(image, ctx.settings.thumbnail_size)
        blob = ctx.storage.put_bytes(data)
        item.assets.append(
            Asset(
                role="thumbnail",
                storage_key=blob.key,
                sha256=blob.sha256,
                mime_type="image/webp",
                byte_size=blob.size,
                width=w,
                height=h,
            )
        )
    item.phash = perceptual_hash(image)
    item.duplicate_of = find_near_duplicate(
        session, item, max_distance=ctx.settings.phash_max_distance
    )
    return image


def find_near_duplicate(session: Session, item: ContentItem, *, max_distance: int) -> str | None:
    """The oldest other item of the tenant whose pHash is within ``max_distance`` bits."""
    if item.phash is None:
        return None
    rows = session.execute(
        select(ContentItem.id, ContentItem.phash, ContentItem.duplicate_of)
        .where(
            ContentItem.tenant_id == item.tenant_id,
            ContentItem.id != item.id,
            ContentItem.phash.is_not(None),
        )
        .order_by(ContentItem.created_at, ContentItem.id)
    ).all()
    for cid, ph, dup_of in rows:
        if hamming(item.phash, ph) <= max_distance:
            return dup_of or cid
    return None


def item_text(item: ContentItem) -> str | None:
    parts = [p for p in (item.title, item.text) if p and p.strip()]
    return "\n\n".join(parts) if parts else None


def store_embedding(
    session: Session, item: ContentItem, *, space: str, model: str, vector: np.ndarray
) -> None:
    vec = np.asarray(vector, dtype="<f4").ravel()
    session.execute(
        delete(Embedding).where(Embedding.content_id == item.id, Embedding.space == space)
    )
    session.add(
        Embedding(
            content_id=item.id,
            space=space,
            tenant_id=item.tenant_id,
            model=model,
            dim=int(vec.shape[0]),
            vector=vec.tobytes(),
        )
    )


def replace_auto_tags(
    session: Session, item: ContentItem, *, source: str, tags: list[tuple[str, float]]
) -> int:
    """Replace this source's automatic tags; never re-add a tag a person rejected or set."""
    session.execute(
        delete(Tag).where(
            Tag.content_id == item.id, Tag.source == source, Tag.origin == TagOrigin.auto
        )
    )
    human = {
        name
        for (name,) in session.execute(
            select(Tag.name).where(Tag.content_id == item.id, Tag.origin != TagOrigin.auto)
        )
    }
    best: dict[str, float] = {}
    for name, score in tags:
        name = name.strip().lower()[:200]
        if name and name not in human:
            best[name] = max(best.get(name, 0.0), float(score))
    for name, score in best.items():
        session.add(
            Tag(
                tenant_id=item.tenant_id,
                content_id=item.id,
                name=name,
                score=round(score, 6),
                source=source,
                origin=TagOrigin.auto,
            )
        )
    return len(best)


def load_vocabulary(session: Session, tenant_id: str) -> list[Any]:
    from workers.tagging.text import VocabularyEntry as Vocab

    rows = session.scalars(
        select(VocabularyEntry)
        .where(VocabularyEntry.tenant_id == tenant_id)
        .order_by(VocabularyEntry.name)
    ).all()
    return [Vocab(name=r.name, descriptions=list(r.descriptions or [])) for r in rows]


def tag_items(ctx: WorkerContext, session: Session, items: list[ContentItem]) -> dict[str, Any]:
    """Tag many items with batched inference: one model call per modality, not one per item."""
    prepared: list[Prepared] = []
    for item in items:
        image = prepare_image(ctx, session, item) if item.kind in ("image", "generated") else None
        prepared.append(Prepared(item=item, image=image, text=item_text(item)))
    # Commit the cheap, model-free results first: a missing model must not lose them.
    session.commit()

    summary: dict[str, Any] = {"items": len(items), "tags": 0, "models": []}
    with_image = [p for p in prepared if p.image is not None]
    with_text = [p for p in prepared if p.text]
    vocabulary = load_vocabulary(session, items[0].tenant_id) if items else []

    if with_image:
        from workers.tagging.image import ImageTagger

        tagger = ctx.registry.get(IMAGE_MODEL, ImageTagger)
        results = tagger.predict([p.image for p in with_image])
        vocab_map = _image_vocabulary(vocabulary)
        for p, res in zip(with_image, results, strict=True):
            tags = list(res.labels)
            tags += [(v, s) for lbl, s in res.labels for v in vocab_map.get(lbl, [])]
            summary["tags"] += replace_auto_tags(session, p.item, source=tagger.ref, tags=tags)
            store_embedding(session, p.item, space="image", model=tagger.ref, vector=res.embedding)
        summary["models"].append(tagger.ref)

    if with_text:
        from workers.tagging.text import TextEmbedder

        embedder = ctx.registry.get(TEXT_MODEL, TextEmbedder)
        results = embedder.tag_texts([p.text for p in with_text], vocabulary or None)
        for p, res in zip(with_text, results, strict=True):
            tags = list(res.keyphrases) + list(res.vocabulary_tags)
            summary["tags"] += replace_auto_tags(session, p.item, source=embedder.ref, tags=tags)
            store_embedding(session, p.item, space="text", model=embedder.ref, vector=res.embedding)
        summary["models"].append(embedder.ref)

    for p in prepared:
        p.item.status = ContentStatus.ready
    session.commit()
    summary["duplicates"] = {
        p.item.id: p.item.duplicate_of for p in prepared if p.item.duplicate_of
    }
    return summary


def _image_vocabulary(vocabulary: list[Any]) -> dict[str, list[str]]:
    """Image label -> tenant tags whose name or description names that label exactly."""
    out: dict[str, list[str]] = {}
    for entry in vocabulary:
        for phrase in [entry.name, *entry.descriptions]:
            for word in {phrase.strip().lower()}:
                out.setdefault(word, []).append(entry.name)
    return out

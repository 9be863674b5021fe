"""What a tagging job does to one or many content items. Plain functions; tests call them.

The steps live beside it: ``preparation`` (assets, decoding, duplicates), ``persistence``
(embeddings, tags); ``tag_items`` runs the models between them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from shared.db.models import ContentItem, ContentStatus
from shared.model_versions import ModelError
from shared.storage import BlobSource, delete_unreferenced_blobs, ensure_stored
from workers.context import WorkerContext
from workers.tagging.duplicates import find_near_duplicate
from workers.tagging.facets import (
    FacetedVocabulary,
    image_vocabulary_tags,
    load_faceted_vocabulary,
    text_vocabulary_tags,
)
from workers.tagging.persistence import replace_auto_tags_many, store_embeddings
from workers.tagging.preparation import (
    Prepared,
    detach_working_copies,
    item_text,
    mark_content_failed,
    prepare_images,
)

# The job-level entry points, importable from here as before the steps moved out.
__all__ = ["find_near_duplicate", "mark_content_failed", "prepare_images", "tag_items"]


def tag_items(ctx: WorkerContext, session: Session, items: list[ContentItem]) -> dict[str, Any]:
    """Tag many items with batched inference: one model call per modality, not one per item."""
    visual = [item for item in items if item.kind in ("image", "generated")]
    tagger = None
    tagger_error: ModelError | None = None
    if visual:
        from workers.tagging.image import ImageTagger

        try:
            tagger = ctx.registry.get(ctx.settings.image_model, ImageTagger)
        except ModelError as exc:
            # Thumbnails and duplicates are still worth keeping: raised once they are committed.
            tagger_error = exc
    resize = tagger.resize if tagger is not None else ctx.settings.working_copy_size
    written: list[BlobSource] = []
    images = prepare_images(ctx, session, visual, model_resize=resize, written=written)
    decoded = dict(zip(map(id, visual), images, strict=True))
    prepared = [
        Prepared(item=item, image=decoded.get(id(item)), text=item_text(item)) for item in items
    ]
    # Commit the cheap, model-free results first: a missing model must not lose them.
    session.commit()
    ensure_stored(ctx.storage, written)

    summary: dict[str, Any] = {"items": len(items), "tags": 0, "models": []}
    with_image = [p for p in prepared if p.image is not None]
    with_text = [p for p in prepared if p.text]
    tenant_id = items[0].tenant_id if items else ""
    # Entries, their facets and thresholds (workers/tagging/facets.py).
    vocabulary = load_faceted_vocabulary(session, tenant_id) if items else None
    # Rows in the same order as with_image / with_text, for the tenant's own taggers.
    vectors: dict[str, np.ndarray] = {}

    if with_image:
        if tagger is None:
            assert tagger_error is not None
            raise tagger_error
        image_results = tagger.predict([p.image for p in with_image if p.image is not None])
        vocab_tags: list[list[tuple[str, float]]] = [[] for _ in image_results]
        if vocabulary:
            from workers.tagging.text import TextEmbedder

            embedder = ctx.registry.get(ctx.settings.text_model, TextEmbedder)
            vocab_tags = image_vocabulary_tags(
                embedder, [r.labels for r in image_results], vocabulary
            )
        vectors["image"] = _store_outputs(
            session,
            summary,
            with_image,
            [list(r.labels) + extra for r, extra in zip(image_results, vocab_tags, strict=True)],
            [r.embedding for r in image_results],
            space="image",
            source=tagger.ref,
            levels=[r.levels for r in image_results],
        )

    if with_text:
        from workers.tagging.text import TextEmbedder

        embedder = ctx.registry.get(ctx.settings.text_model, TextEmbedder)
        text_results = embedder.tag_texts([p.text for p in with_text if p.text], None)
        vocab_text = text_vocabulary_tags(
            embedder,
            session,
            tenant_id,
            np.stack([r.embedding for r in text_results]),
            vocabulary or FacetedVocabulary([]),
        )
        vectors["text"] = _store_outputs(
            session,
            summary,
            with_text,
            [list(r.keyphrases) + v for r, v in zip(text_results, vocab_text, strict=True)],
            [r.embedding for r in text_results],
            space="text",
            source=embedder.ref,
        )

    if vectors:
        summary["tags"] += _apply_tenant_taggers(
            ctx, session, tenant_id, vectors, {"image": with_image, "text": with_text}, summary
        )

    spent = detach_working_copies(visual)
    for p in prepared:
        p.item.status = ContentStatus.ready
    session.commit()
    delete_unreferenced_blobs(session, ctx.storage, spent)
    summary["duplicates"] = {
        p.item.id: p.item.duplicate_of for p in prepared if p.item.duplicate_of
    }
    return summary


def _store_outputs(
    session: Session,
    summary: dict[str, Any],
    rows: list[Prepared],
    tags: list[list[tuple[str, float]]],
    embeddings: list[np.ndarray],
    *,
    space: str,
    source: str,
    levels: Sequence[Mapping[str, str]] | None = None,
) -> np.ndarray:
    """One model's tags and embeddings for ``rows`` (all in the same order); the embeddings
    come back stacked, for the tenant's own taggers."""
    items = [p.item for p in rows]
    summary["tags"] += replace_auto_tags_many(
        session, list(zip(items, tags, strict=True)), source=source, levels=levels
    )
    store_embeddings(session, list(zip(items, embeddings, strict=True)), space=space, model=source)
    summary["models"].append(source)
    return np.stack(embeddings)


def _apply_tenant_taggers(
    ctx: WorkerContext,
    session: Session,
    tenant_id: str,
    vectors: dict[str, np.ndarray],
    rows: dict[str, list[Prepared]],
    summary: dict[str, Any],
) -> int:
    from workers.tagging.tenant_taggers import apply_tenant_taggers, drop_other_versions

    applied = apply_tenant_taggers(ctx.registry, session, tenant_id, vectors)
    added = 0
    for out in applied.outputs:
        space_rows = rows[out.space]
        drop_other_versions(session, [p.item.id for p in space_rows], out)
        added += replace_auto_tags_many(
            session,
            [(p.item, tags) for p, tags in zip(space_rows, out.tags, strict=True)],
            source=out.source,
        )
        summary["models"].append(out.source)
    if applied.errors:
        summary["tagger_errors"] = applied.errors
    return added

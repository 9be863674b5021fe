"""What a tagging job does to one or many content items. Plain functions; tests call them."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import ARRAY, Integer, any_, bindparam, delete, insert, inspect, select, union
from sqlalchemy.orm import Session, selectinload

from shared import phash_index
from shared.db.models import (
    Asset,
    ContentItem,
    ContentStatus,
    Embedding,
    Tag,
    TagOrigin,
    VocabularyEntry,
    new_id,
    utcnow,
)
from shared.imaging import (
    WORKING_ROLE,
    decode_image,
    hamming_many,
    hash_array,
    make_renditions,
)
from shared.inference.base import ModelError
from shared.storage import (
    BlobSource,
    delete_unreferenced_blobs,
    ensure_stored,
    put_remembered,
)
from workers.context import WorkerContext
from workers.tagging.facets import (
    FacetedVocabulary,
    image_vocabulary_tags,
    load_faceted_vocabulary,
    text_vocabulary_tags,
)

log = logging.getLogger(__name__)


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


def prepare_images(
    ctx: WorkerContext,
    session: Session,
    items: Sequence[ContentItem],
    *,
    model_resize: int,
    written: list[BlobSource] | None = None,
) -> list[Any | None]:
    """Decode each image once for tagging, flag near-duplicates (one query for all the items),
    and make the thumbnail and pHash of items that arrived without them.

    An upload's working copy (made by the gateway from its one decode: shared/imaging.py) is
    read instead of the original whenever it holds the pixels a model of ``model_resize``
    needs; otherwise, or if it is missing or unreadable, the original decodes in JPEG draft mode
    at the smallest DCT scale that still serves the model and the thumbnail. Items without an
    original give ``None``. Blobs stored here are added to ``written``, for
    :func:`shared.storage.ensure_stored` once the rows are committed.
    """
    if not items:
        return []
    _load_assets(session, items)
    sink: list[BlobSource] = [] if written is None else written
    settings = ctx.settings
    need = max(settings.thumbnail_size, model_resize)
    out: list[Any | None] = []
    for item in items:
        assets = {a.role: a for a in item.assets}
        original = assets.get("original")
        if original is None:
            out.append(None)
            continue
        # Thumbnail and pHash show the whole frame: an item missing them decodes its original.
        needs_renditions = item.phash is None or "thumbnail" not in assets
        image = None
        if not needs_renditions:
            image = _read_working_copy(ctx, assets.get(WORKING_ROLE), original, model_resize)
        if image is None:
            with ctx.storage.open(original.storage_key) as f:
                image, (original.width, original.height) = decode_image(f, min_size=need)
        if needs_renditions:
            made = make_renditions(
                image,
                working_size=None,
                thumbnail_size=settings.thumbnail_size,
                thumbnail_format=settings.thumbnail_format,
            )
            item.phash = made.phash
            for r in made.files:
                if r.role not in assets:
                    blob = put_remembered(ctx.storage, r.data, sink)
                    item.assets.append(
                        Asset.stored(
                            blob, role=r.role, mime_type=r.mime_type, width=r.width, height=r.height
                        )
                    )
        out.append(image)
    # Once every pHash is known (the lookup is by their blocks); in batch order, so an item
    # can match an earlier one of the same batch.
    scan = _DuplicateScan.load(session, items, max_distance=settings.phash_max_distance)
    for item, image in zip(items, out, strict=True):
        if image is not None:
            item.duplicate_of = scan.match(item, max_distance=settings.phash_max_distance)
    return out


def _read_working_copy(
    ctx: WorkerContext, working: Asset | None, original: Asset, model_resize: int
) -> Any | None:
    """The working copy as an RGB image, or None when there is none, it is too small for this
    model (unless it is the original's full centre square), or it cannot be read (it is not
    fsynced: a crash can lose it, and the original is still there)."""
    if working is None or not working.width or not working.height:
        return None
    size = (working.width, working.height)
    # A square smaller than the model's resize serves only if it was never scaled down.
    unscaled = working.width == min(original.width or 0, original.height or 0)
    if min(size) < model_resize and not unscaled:
        return None
    try:
        with ctx.storage.open(working.storage_key) as f:
            image, decoded_size = decode_image(f)
    except (OSError, SyntaxError, ValueError, KeyError) as exc:
        log.warning("working copy of %s unreadable, decoding the original: %s", original.id, exc)
        return None
    return image if decoded_size == size else None


def detach_working_copies(items: Sequence[ContentItem]) -> set[str]:
    """Remove tagged items' working-copy rows; return their blob keys, to delete (if nothing
    else points at them) once this is committed."""
    keys = set()
    for item in items:
        for asset in [a for a in item.assets if a.role == WORKING_ROLE]:
            keys.add(asset.storage_key)
            item.assets.remove(asset)
    return keys


def _load_assets(session: Session, items: Sequence[ContentItem]) -> None:
    """Load every item's assets with one query, not one lazy load (and autoflush) per item."""
    ids = [it.id for it in items if it.id is not None and "assets" in inspect(it).unloaded]
    if ids:
        session.scalars(
            select(ContentItem)
            .where(ContentItem.id.in_(ids))
            .options(selectinload(ContentItem.assets))
        ).all()


def find_near_duplicate(session: Session, item: ContentItem, *, max_distance: int) -> str | None:
    """The oldest other item of the tenant whose pHash is within ``max_distance`` bits."""
    if item.phash is None:
        return None
    scan = _DuplicateScan.load(session, [item], max_distance=max_distance)
    return scan.match(item, max_distance=max_distance)


MAX_LOOKUP_VALUES = 20_000


class _DuplicateScan:
    """The rows that can be near-duplicates of a batch's images (by pHash block, or the tenant's
    every pHash), read in one query per batch, answering as one full scan per item would.

    Items are matched in the order :meth:`match` is called; an item of the batch that was
    matched already counts with its new pHash and duplicate_of, one not yet matched with what
    the database held (as when each item flushed and queried in turn). Rows are in age order,
    so the first hit is the oldest.
    """

    def __init__(self, rows: Sequence[Any], pending: set[str]) -> None:
        self.ids = [r.id for r in rows]
        self.tenants = np.array([r.tenant_id for r in rows], dtype=object)
        self.canonical = [r.duplicate_of or r.id for r in rows]
        # The batch's own items take part only once matched, whatever pHash the gateway stored
        # at upload: a later item of the batch must not claim an earlier one as its duplicate.
        self.valid = np.array(
            [r.phash is not None and r.id not in pending for r in rows], dtype=bool
        )
        self.hashes = hash_array([r.phash or "0" for r in rows])
        self.row = {cid: i for i, cid in enumerate(self.ids)}

    @classmethod
    def load(
        cls, session: Session, items: Sequence[ContentItem], *, max_distance: int
    ) -> _DuplicateScan:
        """The batch's own rows and every row of their tenants that can be within
        ``max_distance`` of one of the batch's pHashes (an indexed lookup by pHash block:
        shared/phash_index.py), or, past the index's radius, every row with a pHash."""
        ids = [it.id for it in items if it.id is not None]
        cols = (
            ContentItem.id,
            ContentItem.tenant_id,
            ContentItem.phash,
            ContentItem.duplicate_of,
            ContentItem.created_at,
        )
        parts: list[Any] = [select(*cols).where(ContentItem.id.in_(ids))] if ids else []
        lookups: list[Any] = []
        if phash_index.indexable(max_distance):
            radius = phash_index.block_radius(max_distance)
            by_tenant: dict[str, list[str]] = {}
            for it in items:
                if it.phash is not None:
                    by_tenant.setdefault(it.tenant_id, []).append(it.phash)
            looked_up = 0
            for tenant, hashes in by_tenant.items():
                split = [phash_index.blocks(h) for h in hashes]
                for k, name in enumerate(phash_index.COLUMNS):
                    values = sorted(
                        {v for b in split for v in phash_index.neighbours(b[k], radius)}
                    )
                    looked_up += len(values)
                    column = getattr(ContentItem, name)
                    lookups.append(
                        select(*cols).where(
                            ContentItem.tenant_id == tenant, _one_of(session, column, values)
                        )
                    )
            # A wide radius on a large batch would pass SQLite's limit of 32,766 parameters.
            if looked_up > MAX_LOOKUP_VALUES:
                lookups = []
        if lookups:
            parts += lookups
        else:
            tenants = {it.tenant_id for it in items}
            parts.append(
                select(*cols).where(
                    ContentItem.tenant_id.in_(tenants), ContentItem.phash.is_not(None)
                )
            )
        if not parts:
            return cls([], set())
        found = union(*parts).subquery()
        query = select(found.c.id, found.c.tenant_id, found.c.phash, found.c.duplicate_of)
        # The SELECT reads what the database holds, not the batch's unflushed new pHashes:
        # the batch's rows take part only once matched, with their new values. Through the
        # connection, and without returning created_at, because a batch of copies of the same
        # photos reads every copy, and ORM rows and decoded timestamps cost more than the query.
        with session.no_autoflush:
            rows = session.connection().execute(query.order_by(found.c.created_at, found.c.id))
            return cls(rows.all(), set(ids))

    def match(self, item: ContentItem, *, max_distance: int) -> str | None:
        if item.phash is None:
            return None
        hit = self.valid & (self.tenants == item.tenant_id)
        hit &= hamming_many(item.phash, self.hashes) <= max_distance
        own = self.row.get(item.id)
        if own is not None:
            hit[own] = False
        # An item that is already a duplicate of this one does not make this one a duplicate
        # (re-tagging an original would otherwise point it at itself).
        found = next(
            (self.canonical[i] for i in np.flatnonzero(hit) if self.canonical[i] != item.id),
            None,
        )
        if own is not None:
            self.hashes[own] = int(item.phash, 16)
            self.valid[own] = True
            self.canonical[own] = found or item.id
        return found


def _one_of(session: Session, column: Any, values: list[int]) -> Any:
    """``column IN values``; on PostgreSQL as ``= ANY(array)``, one parameter instead of ~500
    (binding them one by one took longer than the query: bench/bench_duplicates.py)."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(Integer)))
    return column.in_(values)


def item_text(item: ContentItem) -> str | None:
    parts = [p for p in (item.title, item.text) if p and p.strip()]
    return "\n\n".join(parts) if parts else None


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
        results = tagger.predict([p.image for p in with_image])
        vocab_tags: list[list[tuple[str, float]]] = [[] for _ in results]
        if vocabulary:
            from workers.tagging.text import TextEmbedder

            embedder = ctx.registry.get(ctx.settings.text_model, TextEmbedder)
            vocab_tags = image_vocabulary_tags(embedder, [r.labels for r in results], vocabulary)
        vectors["image"] = _store_outputs(
            session,
            summary,
            with_image,
            [list(r.labels) + extra for r, extra in zip(results, vocab_tags, strict=True)],
            [r.embedding for r in results],
            space="image",
            source=tagger.ref,
            levels=[r.levels for r in results],
        )

    if with_text:
        from workers.tagging.text import TextEmbedder

        embedder = ctx.registry.get(ctx.settings.text_model, TextEmbedder)
        results = embedder.tag_texts([p.text for p in with_text], None)
        vocab_text = text_vocabulary_tags(
            embedder,
            session,
            tenant_id,
            np.stack([r.embedding for r in results]),
            vocabulary or FacetedVocabulary([]),
        )
        vectors["text"] = _store_outputs(
            session,
            summary,
            with_text,
            [list(r.keyphrases) + v for r, v in zip(results, vocab_text, strict=True)],
            [r.embedding for r in results],
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
    from workers.tagging.tenant import apply_tenant_taggers, drop_other_versions

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

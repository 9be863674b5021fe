"""What a tenant tagger learns from, and whether that is enough to train it.

The gateway (which refuses a training job up front) and the training worker (which trains) both
call these, so the API never accepts a job that the worker would fail for lack of examples.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.models import HUMAN_ORIGINS, Embedding, Tag, Tagger, TaggerExample, TagOrigin
from shared.schemas.tagging import MIN_EXAMPLES_PER_LABEL

LabelSets = dict[str, set[str]]

_IN_CHUNK = 500  # ids per IN (...) clause; SQLite allows at most 999 parameters in older builds


def labelled_items(session: Session, tagger: Tagger) -> tuple[LabelSets, LabelSets]:
    """``(positive, negative)``: the tagger's labels per content item.

    Explicit examples and tags a person added or accepted are positive, rejected tags negative.
    """
    labels = list(tagger.labels)
    wanted = set(labels)
    positive: LabelSets = {}
    negative: LabelSets = {}
    for cid, label in session.execute(
        select(TaggerExample.content_id, TaggerExample.label).where(
            TaggerExample.tagger_id == tagger.id
        )
    ):
        if label in wanted:
            positive.setdefault(cid, set()).add(label)
    for cid, name, origin in session.execute(
        select(Tag.content_id, Tag.name, Tag.origin).where(
            Tag.tenant_id == tagger.tenant_id,
            Tag.name.in_(labels),
            Tag.origin.in_((*HUMAN_ORIGINS, TagOrigin.rejected)),
        )
    ):
        (negative if origin == TagOrigin.rejected else positive).setdefault(cid, set()).add(name)
    # A rejection is the latest deliberate word on that pair; it overrides an older example.
    for cid, names in negative.items():
        if cid in positive:
            positive[cid] -= names
    return positive, negative


def positives_per_label(labels: Iterable[str], positive: Mapping[str, set[str]]) -> dict[str, int]:
    counts = dict.fromkeys(labels, 0)
    for names in positive.values():
        for label in names:
            if label in counts:
                counts[label] += 1
    return counts


def training_model(models: Iterable[str]) -> str:
    """The embedding model to train on: vectors of two model versions do not share a space, so
    the most common one among the labelled items wins ("" when there are none)."""
    common = Counter(models).most_common(1)
    return common[0][0] if common else ""


def embedding_models(session: Session, ids: list[str], space: str) -> dict[str, str]:
    """The embedding model of each item that has a vector in ``space``."""
    out: dict[str, str] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        for cid, model in session.execute(
            select(Embedding.content_id, Embedding.model).where(
                Embedding.content_id.in_(chunk), Embedding.space == space
            )
        ):
            out[cid] = model
    return out


def label_counts(
    labels: Iterable[str], positive: Mapping[str, set[str]], items: Iterable[str]
) -> dict[str, dict[str, int]]:
    """Positives and negatives per label among ``items`` (one-vs-rest: an item not positive for
    a label is a negative for it)."""
    items = list(items)
    out = {}
    for label in labels:
        n = sum(1 for cid in items if label in positive.get(cid, ()))
        out[label] = {"positives": n, "negatives": len(items) - n}
    return out


def short_labels(per_label: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """The labels that keep a tagger from training: each needs ``MIN_EXAMPLES_PER_LABEL``
    positive and as many negative items (cross-validation needs both classes in every fold)."""
    return {
        label: dict(c)
        for label, c in per_label.items()
        if min(c["positives"], c["negatives"]) < MIN_EXAMPLES_PER_LABEL
    }


def training_counts(session: Session, tagger: Tagger) -> tuple[dict[str, dict[str, int]], int]:
    """``(per_label, without_embedding)`` as training would see them now, without the vectors:
    only items with an embedding of the tagger's space and of the common model count."""
    positive, negative = labelled_items(session, tagger)
    ids = sorted(set(positive) | set(negative))
    models = embedding_models(session, ids, tagger.kind)
    model = training_model(models.values())
    kept = [cid for cid in ids if models.get(cid) == model]
    return label_counts(tagger.labels, positive, kept), len(ids) - len(kept)

"""Tenant taggers: create, label examples, count them and queue training.

Whether a tagger has enough examples to train is decided by ``shared.db.taggers``, the rule the
training worker applies too, so a job the worker would fail is refused here instead.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.gateway.errors import Conflict, Invalid, NotFound
from shared.db.models import ContentItem, ModelVersion, Tagger, TaggerExample
from shared.db.taggers import labelled_items, positives_per_label, short_labels, training_counts
from shared.model_versions import tagger_model_name
from shared.schemas.tagging import (
    MIN_EXAMPLES_PER_LABEL,
    TaggerCreate,
    TaggerExamplesAdded,
    TaggerExamplesIn,
    TaggerPublic,
)


def get_tagger(session: Session, *, tenant_id: str, tagger_id: str) -> Tagger:
    tagger = session.scalars(
        select(Tagger).where(Tagger.id == tagger_id, Tagger.tenant_id == tenant_id)
    ).first()
    if tagger is None:
        raise NotFound(f"tagger {tagger_id} not found")
    return tagger


def example_counts(session: Session, tagger: Tagger) -> dict[str, int]:
    """Positive items per label: explicit examples plus accepted/manual tags (deduplicated)."""
    positive, _ = labelled_items(session, tagger)
    return positives_per_label(tagger.labels, positive)


def tagger_public(session: Session, tagger: Tagger) -> TaggerPublic:
    active = session.scalars(
        select(ModelVersion).where(
            ModelVersion.name == tagger_model_name(tagger.id), ModelVersion.active.is_(True)
        )
    ).first()
    return TaggerPublic(
        id=tagger.id,
        name=tagger.name,
        kind=tagger.kind,
        labels=list(tagger.labels),
        mode=tagger.mode,
        model=tagger_model_name(tagger.id),
        active_version=active.version if active else None,
        examples_per_label=example_counts(session, tagger),
        metrics=active.metrics if active else None,
        trained_at=tagger.trained_at,
        created_at=tagger.created_at,
    )


def create_tagger(session: Session, *, tenant_id: str, body: TaggerCreate) -> Tagger:
    tagger = Tagger(
        tenant_id=tenant_id,
        name=body.name,
        kind=body.kind,
        labels=body.labels,
        mode=body.mode,
    )
    session.add(tagger)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict(f"a tagger named {body.name!r} already exists") from exc
    return tagger


def list_taggers(session: Session, *, tenant_id: str) -> list[Tagger]:
    return list(
        session.scalars(
            select(Tagger).where(Tagger.tenant_id == tenant_id).order_by(Tagger.name)
        ).all()
    )


def add_examples(session: Session, tagger: Tagger, body: TaggerExamplesIn) -> TaggerExamplesAdded:
    """All or nothing: every label must be the tagger's and every item the tenant's."""
    allowed = set(tagger.labels)
    unknown = sorted({e.label for e in body.examples if e.label not in allowed})
    if unknown:
        raise Invalid(
            f"unknown label(s) {', '.join(map(repr, unknown))}; this tagger's labels are "
            f"{', '.join(map(repr, tagger.labels))}",
            details={"unknown_labels": unknown},
        )
    ids = sorted({e.content_id for e in body.examples})
    mine = set(
        session.scalars(
            select(ContentItem.id).where(
                ContentItem.id.in_(ids), ContentItem.tenant_id == tagger.tenant_id
            )
        ).all()
    )
    missing = [cid for cid in ids if cid not in mine]
    if missing:
        raise Invalid(
            f"content not found: {', '.join(missing[:10])}"
            + (f" and {len(missing) - 10} more" if len(missing) > 10 else ""),
            details={"missing_content_ids": missing},
        )
    existing = set(
        session.execute(
            select(TaggerExample.content_id, TaggerExample.label).where(
                TaggerExample.tagger_id == tagger.id, TaggerExample.content_id.in_(ids)
            )
        ).all()
    )
    new = {(e.content_id, e.label) for e in body.examples} - existing
    for cid, label in sorted(new):
        session.add(
            TaggerExample(
                tagger_id=tagger.id, tenant_id=tagger.tenant_id, content_id=cid, label=label
            )
        )
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict("examples changed concurrently; send the request again") from exc
    return TaggerExamplesAdded(added=len(new), examples_per_label=example_counts(session, tagger))


def check_trainable(session: Session, tagger: Tagger) -> None:
    """Refuse training that the worker would fail for lack of examples (the same counts)."""
    per_label, without_embedding = training_counts(session, tagger)
    short = short_labels(per_label)
    if not short:
        return
    skipped = (
        f" ({without_embedding} labelled items have no {tagger.kind} embedding yet and do "
        "not count)"
        if without_embedding
        else ""
    )
    raise Invalid(
        f"too few examples to train: every label needs at least {MIN_EXAMPLES_PER_LABEL} "
        f"positive and {MIN_EXAMPLES_PER_LABEL} negative labelled items, but "
        + ", ".join(
            f"{label!r} has {c['positives']} positive and {c['negatives']} negative"
            for label, c in short.items()
        )
        + skipped,
        details={"examples_per_label": example_counts(session, tagger), "per_label": per_label},
    )

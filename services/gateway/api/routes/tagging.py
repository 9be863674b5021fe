"""Tagging API: vocabulary, tag review, similar content, tenant taggers and model versions."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Body, Query, Response
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.gateway import crud
from services.gateway.api.deps import (
    CeleryDep,
    ReaderDep,
    SessionDep,
    SettingsDep,
    SimilarIndexDep,
    WriterDep,
)
from services.gateway.vocabulary import VOCABULARY_EXAMPLE, read_vocabulary, replace_vocabulary
from shared.db.models import (
    ContentItem,
    ContentStatus,
    Embedding,
    ModelVersion,
    Tag,
    Tagger,
    TaggerExample,
    TagOrigin,
)
from shared.http import ApiError
from shared.jobs import new_job, publish
from shared.model_versions import active_version, list_versions, set_active_version
from shared.schemas.content import ContentPublic, TagsCreate
from shared.schemas.tagging import (
    MAX_VOCABULARY_ENTRIES,
    MIN_EXAMPLES_PER_LABEL,
    ModelList,
    ModelVersionPublic,
    SimilarItem,
    SimilarPage,
    Space,
    TaggerCreate,
    TaggerExamplesAdded,
    TaggerExamplesIn,
    TaggerList,
    TaggerPublic,
    TrainAccepted,
    Vocabulary,
    VocabularyEntryIn,
    VocabularyIn,
    normalise_tag,
)

router = APIRouter(prefix="/v1", tags=["tagging"])

TENANT_MODEL_PREFIX = "tagger_"
HUMAN_ORIGINS = (TagOrigin.manual, TagOrigin.accepted)


# --- vocabulary --------------------------------------------------------------------------------


@router.put("/vocabulary", response_model=Vocabulary, summary="Replace the tenant's vocabulary")
def put_vocabulary(
    body: Annotated[list[VocabularyEntryIn] | VocabularyIn, Body(examples=[VOCABULARY_EXAMPLE])],
    principal: WriterDep,
    session: SessionDep,
) -> Vocabulary:
    """The tags you want zero-shot on text and images: ``[{"name", "descriptions": [...]}]``,
    or ``{"facets": [...], "entries": [...]}`` to group entries into facets (docs/facets.md).

    At most 500 entries; names 1-100 characters, unique (compared lower-case, stored
    lower-case); up to 10 descriptions of up to 300 characters each. A one-sentence
    description ("cats, dogs and other animals") tags far better than a bare name. An entry
    without a facet is tagged when its calibrated probability reaches its ``threshold``
    (default 0.5). A ``single`` facet gives every item exactly one of its entries, the best,
    with its probability (nothing only with ``allow_none``); a ``multi`` facet each entry at or
    above its threshold. The new vocabulary applies to content tagged from now on; re-upload
    with ``?on_conflict=update`` to re-tag existing items. An empty list removes the vocabulary.
    """
    if isinstance(body, list) and len(body) > MAX_VOCABULARY_ENTRIES:
        raise ApiError(422, f"at most {MAX_VOCABULARY_ENTRIES} vocabulary entries")
    return replace_vocabulary(session, principal.tenant_id, body)


@router.get("/vocabulary", response_model=Vocabulary)
def get_vocabulary(principal: ReaderDep, session: SessionDep) -> Vocabulary:
    return read_vocabulary(session, principal.tenant_id)


# --- tag review --------------------------------------------------------------------------------


def _content_tags(session: Session, tenant_id: str, content_id: str, name: str) -> list[Tag]:
    return list(
        session.scalars(
            select(Tag).where(
                Tag.tenant_id == tenant_id, Tag.content_id == content_id, Tag.name == name
            )
        ).all()
    )


def _reloaded(session: Session, tenant_id: str, content_id: str) -> ContentPublic:
    session.expire_all()
    return crud.content_public(
        crud.get_content(session, tenant_id=tenant_id, content_id=content_id)
    )


@router.post("/content/{content_id}/tags", response_model=ContentPublic)
def add_tags(
    content_id: str, body: TagsCreate, principal: WriterDep, session: SessionDep
) -> ContentPublic:
    """Add manual tags (``{"tags": [{"name": "...", "score": 1.0}]}``, up to 100).

    A manual tag overrides an earlier rejection of the same name, is never replaced by
    re-tagging, and is a positive example for tenant taggers with that label.
    """
    item = crud.get_content(session, tenant_id=principal.tenant_id, content_id=content_id)
    wanted: dict[str, float] = {}
    for t in body.tags:
        name = normalise_tag(t.name)
        if not name:
            raise ApiError(422, "tag names must not be blank")
        wanted[name] = max(wanted.get(name, 0.0), t.score)
    for name, score in wanted.items():
        rows = _content_tags(session, principal.tenant_id, item.id, name)
        for row in rows:
            if row.origin == TagOrigin.rejected:
                session.delete(row)
        manual = next((r for r in rows if r.source == "manual"), None)
        if manual is not None:
            manual.origin = TagOrigin.manual
            manual.score = score
        else:
            session.add(
                Tag(
                    tenant_id=principal.tenant_id,
                    content_id=item.id,
                    name=name,
                    score=score,
                    source="manual",
                    origin=TagOrigin.manual,
                )
            )
    session.commit()
    return _reloaded(session, principal.tenant_id, item.id)


def _review(
    session: Session, tenant_id: str, content_id: str, name: str, *, accept: bool
) -> ContentPublic:
    item = crud.get_content(session, tenant_id=tenant_id, content_id=content_id)
    name = normalise_tag(name)
    rows = _content_tags(session, tenant_id, item.id, name)
    if accept:
        targets = [r for r in rows if r.origin == TagOrigin.auto]
        if not targets and not any(r.origin == TagOrigin.accepted for r in rows):
            raise ApiError(404, f"content {content_id} has no automatic tag {name!r} to accept")
        for r in targets:
            r.origin = TagOrigin.accepted
    else:
        targets = [r for r in rows if r.origin != TagOrigin.rejected]
        if not targets and not rows:
            raise ApiError(404, f"content {content_id} has no tag {name!r} to reject")
        for r in targets:
            r.origin = TagOrigin.rejected
    session.commit()
    return _reloaded(session, tenant_id, item.id)


@router.post("/content/{content_id}/tags/{name}:accept", response_model=ContentPublic)
def accept_tag(
    content_id: str, name: str, principal: WriterDep, session: SessionDep
) -> ContentPublic:
    """Confirm an automatic tag: it stays through re-tagging and is a positive example."""
    return _review(session, principal.tenant_id, content_id, name, accept=True)


@router.post("/content/{content_id}/tags/{name}:reject", response_model=ContentPublic)
def reject_tag(
    content_id: str, name: str, principal: WriterDep, session: SessionDep
) -> ContentPublic:
    """Reject a tag: it disappears, is never added again by re-tagging of this item, and is
    a negative example for tenant taggers with that label."""
    return _review(session, principal.tenant_id, content_id, name, accept=False)


@router.delete("/content/{content_id}/tags/{name}", status_code=204)
def delete_tag(content_id: str, name: str, principal: WriterDep, session: SessionDep) -> Response:
    """Remove a manual tag (automatic ones are rejected instead, so re-tagging respects it)."""
    item = crud.get_content(session, tenant_id=principal.tenant_id, content_id=content_id)
    res = session.execute(
        delete(Tag).where(
            Tag.content_id == item.id,
            Tag.name == normalise_tag(name),
            Tag.origin == TagOrigin.manual,
        )
    )
    if res.rowcount == 0:  # type: ignore[attr-defined]
        raise ApiError(
            404,
            f"content {content_id} has no manual tag {name!r}; reject automatic tags with "
            f"POST /v1/content/{content_id}/tags/{{name}}:reject",
        )
    session.commit()
    return Response(status_code=204)


# --- similar content ---------------------------------------------------------------------------


@router.get("/content/{content_id}/similar", response_model=SimilarPage)
def similar_content(
    content_id: str,
    principal: ReaderDep,
    session: SessionDep,
    similar: SimilarIndexDep,
    space: Space = "image",
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> SimilarPage:
    """The tenant's items nearest to this one by cosine similarity of their ``image`` (visual)
    or ``text`` embeddings, best first."""
    item = crud.get_content(session, tenant_id=principal.tenant_id, content_id=content_id)
    own = session.get(Embedding, (item.id, space))
    if own is None:
        if item.status == ContentStatus.pending:
            raise ApiError(
                409,
                f"content {content_id} is still being tagged; its {space} embedding will exist "
                "when its job has finished",
                code="not_ready",
            )
        raise ApiError(
            422,
            f"content {content_id} has no {space} embedding"
            + (" (it has no image)" if space == "image" else " (it has no text or title)"),
        )
    hits = similar.nearest(
        session,
        tenant_id=principal.tenant_id,
        space=space,
        model=own.model,
        query=np.frombuffer(own.vector, dtype="<f4"),
        exclude=item.id,
        limit=limit,
    )
    ids = [cid for cid, _ in hits]
    found = {
        c.id: c for c in session.scalars(select(ContentItem).where(ContentItem.id.in_(ids))).all()
    }
    return SimilarPage(
        content_id=item.id,
        space=space,
        model=own.model,
        items=[
            SimilarItem(
                id=cid,
                external_id=found[cid].external_id,
                kind=found[cid].kind,
                title=found[cid].title,
                score=round(score, 6),
            )
            for cid, score in hits
            if cid in found
        ],
    )


# --- tenant taggers ----------------------------------------------------------------------------


def _model_name(tagger_id: str) -> str:
    return f"{TENANT_MODEL_PREFIX}{tagger_id}"


def _get_tagger(session: Session, tenant_id: str, tagger_id: str) -> Tagger:
    tagger = session.scalars(
        select(Tagger).where(Tagger.id == tagger_id, Tagger.tenant_id == tenant_id)
    ).first()
    if tagger is None:
        raise ApiError(404, f"tagger {tagger_id} not found")
    return tagger


def example_counts(session: Session, tagger: Tagger) -> dict[str, int]:
    """Positive items per label: explicit examples plus accepted/manual tags (deduplicated)."""
    pairs = set(
        session.execute(
            select(TaggerExample.content_id, TaggerExample.label).where(
                TaggerExample.tagger_id == tagger.id
            )
        ).all()
    )
    pairs |= set(
        session.execute(
            select(Tag.content_id, Tag.name).where(
                Tag.tenant_id == tagger.tenant_id,
                Tag.name.in_(list(tagger.labels)),
                Tag.origin.in_(HUMAN_ORIGINS),
            )
        ).all()
    )
    rejected = set(
        session.execute(
            select(Tag.content_id, Tag.name).where(
                Tag.tenant_id == tagger.tenant_id,
                Tag.name.in_(list(tagger.labels)),
                Tag.origin == TagOrigin.rejected,
            )
        ).all()
    )
    counts = dict.fromkeys(tagger.labels, 0)
    for _, label in pairs - rejected:
        if label in counts:
            counts[label] += 1
    return counts


def _tagger_public(session: Session, tagger: Tagger) -> TaggerPublic:
    active = session.scalars(
        select(ModelVersion).where(
            ModelVersion.name == _model_name(tagger.id), ModelVersion.active.is_(True)
        )
    ).first()
    return TaggerPublic(
        id=tagger.id,
        name=tagger.name,
        kind=tagger.kind,  # type: ignore[arg-type]
        labels=list(tagger.labels),
        mode=tagger.mode,  # type: ignore[arg-type]
        model=_model_name(tagger.id),
        active_version=active.version if active else None,
        examples_per_label=example_counts(session, tagger),
        metrics=active.metrics if active else None,
        trained_at=tagger.trained_at,
        created_at=tagger.created_at,
    )


@router.post("/taggers", status_code=201, response_model=TaggerPublic)
def create_tagger(
    body: TaggerCreate, response: Response, principal: WriterDep, session: SessionDep
) -> TaggerPublic:
    """A classifier of your own over image or text embeddings, with a fixed label set
    (1-100 labels, stored lower-case). Give it examples, then train it."""
    tagger = Tagger(
        tenant_id=principal.tenant_id,
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
        raise ApiError(409, f"a tagger named {body.name!r} already exists") from exc
    response.headers["Location"] = f"/v1/taggers/{tagger.id}"
    return _tagger_public(session, tagger)


@router.get("/taggers", response_model=TaggerList)
def list_taggers(principal: ReaderDep, session: SessionDep) -> TaggerList:
    rows = session.scalars(
        select(Tagger).where(Tagger.tenant_id == principal.tenant_id).order_by(Tagger.name)
    ).all()
    return TaggerList(items=[_tagger_public(session, t) for t in rows])


@router.get("/taggers/{tagger_id}", response_model=TaggerPublic)
def read_tagger(tagger_id: str, principal: ReaderDep, session: SessionDep) -> TaggerPublic:
    return _tagger_public(session, _get_tagger(session, principal.tenant_id, tagger_id))


@router.post("/taggers/{tagger_id}/examples", response_model=TaggerExamplesAdded)
def add_examples(
    tagger_id: str, body: TaggerExamplesIn, principal: WriterDep, session: SessionDep
) -> TaggerExamplesAdded:
    """Label content for this tagger: ``{"examples": [{"content_id", "label"}]}`` (up to 1000).
    Every label must be one of the tagger's; every item must be yours. Nothing is stored
    unless every example is valid."""
    tagger = _get_tagger(session, principal.tenant_id, tagger_id)
    allowed = set(tagger.labels)
    unknown = sorted({e.label for e in body.examples if e.label not in allowed})
    if unknown:
        raise ApiError(
            422,
            f"unknown label(s) {', '.join(map(repr, unknown))}; this tagger's labels are "
            f"{', '.join(map(repr, tagger.labels))}",
            details={"unknown_labels": unknown},
        )
    ids = sorted({e.content_id for e in body.examples})
    mine = set(
        session.scalars(
            select(ContentItem.id).where(
                ContentItem.id.in_(ids), ContentItem.tenant_id == principal.tenant_id
            )
        ).all()
    )
    missing = [cid for cid in ids if cid not in mine]
    if missing:
        raise ApiError(
            422,
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
                tagger_id=tagger.id, tenant_id=principal.tenant_id, content_id=cid, label=label
            )
        )
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise ApiError(409, "examples changed concurrently; send the request again") from exc
    return TaggerExamplesAdded(added=len(new), examples_per_label=example_counts(session, tagger))


@router.post("/taggers/{tagger_id}/train", status_code=202, response_model=TrainAccepted)
def train_tagger(
    tagger_id: str,
    response: Response,
    principal: WriterDep,
    session: SessionDep,
    celery: CeleryDep,
) -> TrainAccepted:
    """Train a new version on the ``training`` queue; the job result holds cross-validated
    accuracy, macro-F1 and per-label counts. The new version becomes active when it is ready."""
    tagger = _get_tagger(session, principal.tenant_id, tagger_id)
    counts = example_counts(session, tagger)
    short = {label: n for label, n in counts.items() if n < MIN_EXAMPLES_PER_LABEL}
    if short:
        raise ApiError(
            422,
            f"too few examples to train: every label needs at least {MIN_EXAMPLES_PER_LABEL} "
            "labelled items, but " + ", ".join(f"{label!r} has {n}" for label, n in short.items()),
            details={"examples_per_label": counts},
        )
    job = new_job(
        session,
        tenant_id=principal.tenant_id,
        job_type="train_tagger",
        params={"tagger_id": tagger.id, "trigger": "api"},
    )
    session.commit()
    publish(session, celery, job)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return TrainAccepted(job_id=job.id, status=job.status)


# --- model versions ----------------------------------------------------------------------------


@router.get("/models", response_model=ModelList)
def list_models(
    principal: ReaderDep,
    session: SessionDep,
    settings: SettingsDep,
    kind: str | None = None,
) -> ModelList:
    """Model versions you can use: the bundled models (shared by every tenant) and your own
    taggers' versions, with their metrics and which one is active."""
    items: list[ModelVersionPublic] = []
    base = settings.models_dir
    names = sorted(
        d.name
        for d in (base.iterdir() if base.is_dir() else [])
        # Tenant-owned models (taggers, `<base>__<tenant id>` generators) come from SQL below.
        if d.is_dir() and not d.name.startswith((".", TENANT_MODEL_PREFIX)) and "__" not in d.name
    )
    for name in names:
        current = active_version(base, name)
        for m in list_versions(base, name):
            if kind and m.kind != kind:
                continue
            items.append(
                ModelVersionPublic(
                    name=m.name,
                    version=m.version,
                    kind=m.kind,
                    active=m.version == current,
                    scope="bundled",
                    metrics=m.metrics,
                    created_at=m.created_at,
                )
            )
    stmt = select(ModelVersion).where(ModelVersion.tenant_id == principal.tenant_id)
    if kind:
        stmt = stmt.where(ModelVersion.kind == kind)
    rows = sorted(
        session.scalars(stmt).all(),
        key=lambda r: (r.name, int(r.version) if r.version.isdigit() else 0, r.version),
    )
    items += [
        ModelVersionPublic(
            name=r.name,
            version=r.version,
            kind=r.kind,
            active=r.active,
            scope="tenant",
            metrics=r.metrics or {},
            job_id=r.job_id,
            created_at=r.created_at,
        )
        for r in rows
    ]
    return ModelList(items=items)


@router.post("/models/{name}/versions/{version}:activate", response_model=ModelVersionPublic)
def activate_model_version(
    name: str, version: str, principal: WriterDep, session: SessionDep, settings: SettingsDep
) -> ModelVersionPublic:
    """Serve this version of one of your models from now on (workers switch within seconds);
    use it to roll back a retrained tagger. Bundled models are switched by the operator."""
    row = session.scalars(
        select(ModelVersion).where(
            ModelVersion.name == name,
            ModelVersion.version == version,
            ModelVersion.tenant_id == principal.tenant_id,
        )
    ).first()
    if row is None:
        owned = session.scalar(
            select(func.count())
            .select_from(ModelVersion)
            .where(ModelVersion.name == name, ModelVersion.tenant_id == principal.tenant_id)
        )
        if (
            not owned
            and not name.startswith(TENANT_MODEL_PREFIX)
            and list_versions(settings.models_dir, name)
        ):
            raise ApiError(
                403,
                f"{name} is a bundled model shared by every tenant; only an operator can "
                "switch its version",
            )
        raise ApiError(404, f"model {name} has no version {version}")
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.name == name, ModelVersion.id != row.id)
        .values(active=False)
    )
    row.active = True
    try:
        set_active_version(settings.models_dir, name, version)
    except Exception as exc:  # ModelError: the files of that version are gone
        session.rollback()
        raise ApiError(409, f"cannot activate {name} {version}: {exc}") from exc
    session.commit()
    return ModelVersionPublic(
        name=row.name,
        version=row.version,
        kind=row.kind,
        active=True,
        scope="tenant",
        metrics=row.metrics or {},
        job_id=row.job_id,
        created_at=row.created_at,
    )

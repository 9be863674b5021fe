"""Tenant taggers: classifiers of the tenant's own, trained from its examples."""

from __future__ import annotations

from fastapi import APIRouter, Response

from services.gateway import taggers
from services.gateway.api.deps import CeleryDep, ReaderDep, SessionDep, WriterDep
from shared.jobs import new_job, publish
from shared.schemas.model_versions import TrainAccepted
from shared.schemas.tagging import (
    TaggerCreate,
    TaggerExamplesAdded,
    TaggerExamplesIn,
    TaggerList,
    TaggerPublic,
)
from shared.tasks import TRAIN_TAGGER

router = APIRouter(prefix="/v1", tags=["tagging"])


@router.post("/taggers", status_code=201, response_model=TaggerPublic)
def create_tagger(
    body: TaggerCreate, response: Response, principal: WriterDep, session: SessionDep
) -> TaggerPublic:
    """A classifier of your own over image or text embeddings, with a fixed label set
    (1-100 labels, stored lower-case). Give it examples, then train it."""
    tagger = taggers.create_tagger(session, tenant_id=principal.tenant_id, body=body)
    response.headers["Location"] = f"/v1/taggers/{tagger.id}"
    return taggers.tagger_public(session, tagger)


@router.get("/taggers", response_model=TaggerList)
def list_taggers(principal: ReaderDep, session: SessionDep) -> TaggerList:
    rows = taggers.list_taggers(session, tenant_id=principal.tenant_id)
    return TaggerList(items=[taggers.tagger_public(session, t) for t in rows])


@router.get("/taggers/{tagger_id}", response_model=TaggerPublic)
def read_tagger(tagger_id: str, principal: ReaderDep, session: SessionDep) -> TaggerPublic:
    tagger = taggers.get_tagger(session, tenant_id=principal.tenant_id, tagger_id=tagger_id)
    return taggers.tagger_public(session, tagger)


@router.post("/taggers/{tagger_id}/examples", response_model=TaggerExamplesAdded)
def add_examples(
    tagger_id: str, body: TaggerExamplesIn, principal: WriterDep, session: SessionDep
) -> TaggerExamplesAdded:
    """Label content for this tagger: ``{"examples": [{"content_id", "label"}]}`` (up to 1000).
    Every label must be one of the tagger's; every item must be yours. Nothing is stored
    unless every example is valid."""
    tagger = taggers.get_tagger(session, tenant_id=principal.tenant_id, tagger_id=tagger_id)
    return taggers.add_examples(session, tagger, body)


@router.post("/taggers/{tagger_id}/train", status_code=202, response_model=TrainAccepted)
def train_tagger(
    tagger_id: str,
    response: Response,
    principal: WriterDep,
    session: SessionDep,
    celery: CeleryDep,
) -> TrainAccepted:
    """Train a new version on the ``training`` queue; the job result holds cross-validated
    accuracy, macro-F1 and per-label counts. The new version becomes active when it is ready.
    Every label needs at least 3 positive and 3 negative labelled items with an embedding of
    the tagger's space, or the request is refused (422) before a job is queued."""
    tagger = taggers.get_tagger(session, tenant_id=principal.tenant_id, tagger_id=tagger_id)
    taggers.check_trainable(session, tagger)
    job = new_job(
        session,
        tenant_id=principal.tenant_id,
        job_type=TRAIN_TAGGER.name,
        params={"tagger_id": tagger.id, "trigger": "api"},
    )
    session.commit()
    publish(session, celery, job)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return TrainAccepted(job_id=job.id, status=job.status)

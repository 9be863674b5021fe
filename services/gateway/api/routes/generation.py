"""Generation: text from the RNN, images from the GAN, and training both on a tenant's catalogue."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from services.gateway.api.deps import CeleryDep, SessionDep, SettingsDep, WriterDep
from shared.bundled import GENERATORS, build_jobs, pending_build, progress_details
from shared.db.models import Job, JobStatus
from shared.http import ApiError
from shared.jobs import FINAL_STATES, new_job, publish
from shared.model_versions import ModelError, UnknownTag, check_tag, resolve_model
from shared.schemas.generation import (
    GenerationAccepted,
    ImageGeneratorTrain,
    ImagesGenerateRequest,
    InterpolateRequest,
    TextGenerateRequest,
    TextGeneratorTrain,
)
from shared.tasks import GENERATE_IMAGES, GENERATE_TEXT, TRAIN_IMAGE_GENERATOR, TRAIN_TEXT_GENERATOR

router = APIRouter(prefix="/v1", tags=["generation"])

WaitParam = Annotated[
    float,
    Query(ge=0, le=60, description="seconds to wait for the result before answering 202"),
]


def _check_model(
    settings: Any,
    session: Session,
    base: str,
    tenant_id: str,
    version: str | None,
    tag: str | None = None,
) -> None:
    """Refuse early when nothing could serve the request, before a job exists.

    An explicitly requested version that does not exist is a 404 ``model_unavailable``. No
    version at all while the suite builds the bundled model is a 503 ``model_not_ready`` with
    the build job's id and progress (any key may read that job); with no build under way it is
    a 503 ``model_unavailable``, naming the last failed build if there is one. A ``tag`` the
    model was not trained on is a 422 ``unknown_tag`` whose details list the model's tags.
    """
    try:
        name, resolved = resolve_model(settings.models_dir, base, tenant_id, version)
        check_tag(settings.models_dir, name, resolved, tag)
    except UnknownTag as exc:
        raise ApiError(422, str(exc), code="unknown_tag", details={"tags": exc.tags}) from exc
    except ModelError as exc:
        if version is not None:
            raise ApiError(404, str(exc), code="model_unavailable") from exc
        building = pending_build(session, base)
        if building is not None:
            details = progress_details(building)
            raise ApiError(
                503,
                f"the bundled {GENERATORS[base]} is still being built "
                f"({int(details['progress'] * 100)}%); poll /v1/jobs/{building.id} or retry later",
                code="model_not_ready",
                details=details,
                headers={"Retry-After": "30"},
            ) from exc
        failed = build_jobs(session, base, [JobStatus.failed])
        last_failure = {**progress_details(failed[0]), "error": failed[0].error} if failed else None
        raise ApiError(503, str(exc), code="model_unavailable", details=last_failure) from exc


def _enqueue(
    session: Session, celery: Any, tenant_id: str, job_type: str, params: dict[str, Any]
) -> Job:
    job = new_job(session, tenant_id=tenant_id, job_type=job_type, params=params)
    session.commit()
    publish(session, celery, job)
    return job


async def _answer(
    request: Request, response: Response, job: Job, wait_s: float
) -> GenerationAccepted:
    """Wait briefly for short jobs so simple clients get the result in one call."""
    deadline = time.monotonic() + wait_s
    current = job
    while True:
        current = await run_in_threadpool(_reload, request, job.id)
        if current.status in FINAL_STATES or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.1)
    if current.status not in FINAL_STATES:
        response.status_code = 202
    elif current.status == JobStatus.failed:
        response.status_code = 422
    return GenerationAccepted(
        job_id=current.id, status=current.status, result=current.result, error=current.error
    )


def _reload(request: Request, job_id: str) -> Job:
    with request.app.state.sessionmaker() as s:
        job = s.get(Job, job_id)
        assert job is not None
        s.expunge(job)
        return job


@router.post("/generate/text", response_model=GenerationAccepted)
async def generate_text(
    body: TextGenerateRequest,
    request: Request,
    response: Response,
    principal: WriterDep,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
    wait: WaitParam = 10.0,
) -> GenerationAccepted:
    """Draft text with the tenant's RNN (or the bundled one). Same seed + model = same text.

    Answers 200 with the texts when they are ready within ``wait`` seconds, else 202 with the
    job id to poll. Runs on the `generation` queue, never behind training jobs. While the suite
    is still building the bundled generator (first start), answers 503 `model_not_ready` with
    the build job's id and progress."""
    _check_model(
        settings, session, "text_generator", principal.tenant_id, body.model_version, body.tag
    )
    # In a thread, as every publish from an async route: Redis may stall (broker_timeout_s).
    job = await run_in_threadpool(
        _enqueue,
        session,
        celery,
        principal.tenant_id,
        GENERATE_TEXT.name,
        body.model_dump(mode="json"),
    )
    return await _answer(request, response, job, wait)


@router.post("/generate/images", response_model=GenerationAccepted)
async def generate_images(
    body: ImagesGenerateRequest,
    request: Request,
    response: Response,
    principal: WriterDep,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
    wait: WaitParam = 0.0,
) -> GenerationAccepted:
    """Generate ``n`` 64x64 images; each is stored as content of kind `generated` (PNG, with
    the seed and model version in its metadata) and auto-tagged like an upload."""
    _check_model(
        settings, session, "image_generator", principal.tenant_id, body.model_version, body.tag
    )
    params = {"mode": "sample", **body.model_dump(mode="json")}
    job = await run_in_threadpool(
        _enqueue, session, celery, principal.tenant_id, GENERATE_IMAGES.name, params
    )
    return await _answer(request, response, job, wait)


@router.post("/generate/images:interpolate", response_model=GenerationAccepted)
async def interpolate_images(
    body: InterpolateRequest,
    request: Request,
    response: Response,
    principal: WriterDep,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
    wait: WaitParam = 0.0,
) -> GenerationAccepted:
    """A latent walk (spherical interpolation) from ``seed_a`` to ``seed_b`` in ``steps`` images."""
    _check_model(
        settings, session, "image_generator", principal.tenant_id, body.model_version, body.tag
    )
    params = {"mode": "interpolate", **body.model_dump(mode="json")}
    job = await run_in_threadpool(
        _enqueue, session, celery, principal.tenant_id, GENERATE_IMAGES.name, params
    )
    return await _answer(request, response, job, wait)


@router.post("/generators/text:train", status_code=202, response_model=GenerationAccepted)
def train_text_generator(
    body: TextGeneratorTrain, principal: WriterDep, session: SessionDep, celery: CeleryDep
) -> GenerationAccepted:
    """Train the tenant's own RNN on its content's text (filtered by tag/kind) plus an
    optional uploaded corpus. Progress (epoch, loss, validation bits per character) is on the
    job; cancel with `POST /v1/jobs/{id}:cancel`; a dead worker's job resumes from its
    checkpoint."""
    job = _enqueue(
        session,
        celery,
        principal.tenant_id,
        TRAIN_TEXT_GENERATOR.name,
        body.model_dump(mode="json"),
    )
    return GenerationAccepted(job_id=job.id, status=job.status)


@router.post("/generators/images:train", status_code=202, response_model=GenerationAccepted)
def train_image_generator(
    body: ImageGeneratorTrain, principal: WriterDep, session: SessionDep, celery: CeleryDep
) -> GenerationAccepted:
    """Train the tenant's own GAN on its uploaded images (optionally filtered by tag)."""
    job = _enqueue(
        session,
        celery,
        principal.tenant_id,
        TRAIN_IMAGE_GENERATOR.name,
        body.model_dump(mode="json"),
    )
    return GenerationAccepted(job_id=job.id, status=job.status)

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.gateway import crud
from services.gateway.api.deps import ReaderDep, SessionDep, WriterDep
from shared.db.models import Job, JobStatus
from shared.http import ApiError
from shared.jobs import FINAL_STATES
from shared.schemas.jobs import JobList, JobPublic

router = APIRouter(prefix="/v1", tags=["jobs"])


def job_public(job: Job) -> JobPublic:
    return JobPublic.model_validate(job, from_attributes=True)


@router.post("/jobs/{job_id}:cancel", response_model=JobPublic)
def cancel_job(job_id: str, principal: WriterDep, session: SessionDep) -> JobPublic:
    """Ask a job to stop. Queued jobs never start; running training jobs stop at the next step
    and keep their checkpoint. Cancelling a finished job changes nothing. System jobs (the
    suite's builds of its bundled models) are shared by every tenant and cannot be cancelled."""
    job = crud.get_job(session, tenant_id=principal.tenant_id, job_id=job_id, system=True)
    if job.tenant_id is None:
        raise ApiError(403, f"job {job_id} is a system job; it cannot be cancelled")
    if job.status not in FINAL_STATES:
        job.cancel_requested = True
        session.commit()
    return job_public(job)


@router.get("/jobs/{job_id}", response_model=JobPublic)
def read_job(job_id: str, principal: ReaderDep, session: SessionDep) -> JobPublic:
    """A job of yours, or a system job (a bundled model's build: readable by every key)."""
    job = crud.get_job(session, tenant_id=principal.tenant_id, job_id=job_id, system=True)
    return job_public(job)


@router.get("/jobs", response_model=JobList)
def list_jobs(
    principal: ReaderDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    status: JobStatus | None = None,
    type: Annotated[str | None, Query(max_length=64, description="a job type")] = None,
) -> JobList:
    """Your newest jobs first, optionally of one status or type."""
    jobs = crud.list_jobs(
        session,
        tenant_id=principal.tenant_id,
        limit=limit,
        status=status.value if status else None,
        job_type=type,
    )
    return JobList(items=[job_public(j) for j in jobs])

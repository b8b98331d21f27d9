"""/v1/fine_tuning/jobs and its events and checkpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from openft.api.dependencies import CallerDep, ServicesDep
from openft.protocol.fine_tuning import (
    CheckpointList,
    CreateJobRequest,
    EventList,
    FineTuningJob,
    JobList,
)
from openft.service.quotas import Limits

router = APIRouter(prefix="/fine_tuning/jobs", tags=["fine-tuning"])
Limit = Annotated[int, Query(ge=1, le=10_000)]
# `metadata[key]=value` filters are read from the raw query string: described here.
METADATA_FILTER = {
    "parameters": [
        {
            "name": "metadata",
            "in": "query",
            "required": False,
            "style": "deepObject",
            "explode": True,
            "schema": {"type": "object", "additionalProperties": {"type": "string"}},
            "description": "Only jobs with these metadata pairs (`metadata[key]=value`); `metadata=null`: none.",
        }
    ]
}


@router.post("")
def create_job(body: CreateJobRequest, response: Response, services: ServicesDep, caller: CallerDep) -> FineTuningJob:
    limits = Limits()
    job = services.jobs.create(caller.organization, body, limits)
    response.headers.update(limits.headers())  # what the job quotas leave: x-ratelimit-*-requests
    return job


@router.get("", openapi_extra=METADATA_FILTER)
def list_jobs(
    request: Request, services: ServicesDep, caller: CallerDep, after: str | None = None, limit: Limit = 20
) -> JobList:
    metadata = {
        key[len("metadata[") : -1]: value
        for key, value in request.query_params.multi_items()
        if key.startswith("metadata[") and key.endswith("]")
    }
    return services.jobs.list(
        caller.organization,
        after=after,
        limit=limit,
        metadata=metadata or None,
        metadata_is_null=request.query_params.get("metadata") == "null",
    )


@router.get("/{job_id}")
def retrieve_job(job_id: str, services: ServicesDep, caller: CallerDep) -> FineTuningJob:
    return services.jobs.retrieve(caller.organization, job_id)


@router.post("/{job_id}/cancel")
def cancel_job(job_id: str, services: ServicesDep, caller: CallerDep) -> FineTuningJob:
    return services.jobs.cancel(caller.organization, job_id)


@router.post("/{job_id}/pause")
def pause_job(job_id: str, services: ServicesDep, caller: CallerDep) -> FineTuningJob:
    return services.jobs.pause(caller.organization, job_id)


@router.post("/{job_id}/resume")
def resume_job(job_id: str, services: ServicesDep, caller: CallerDep) -> FineTuningJob:
    return services.jobs.resume(caller.organization, job_id)


@router.get("/{job_id}/events")
def list_events(
    job_id: str, services: ServicesDep, caller: CallerDep, after: str | None = None, limit: Limit = 20
) -> EventList:
    return services.jobs.list_events(caller.organization, job_id, after=after, limit=limit)


@router.get("/{job_id}/checkpoints")
def list_checkpoints(
    job_id: str, services: ServicesDep, caller: CallerDep, after: str | None = None, limit: Limit = 10
) -> CheckpointList:
    return services.jobs.list_checkpoints(caller.organization, job_id, after=after, limit=limit)

"""/v1/uploads"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from openft.api.dependencies import CallerDep, ServicesDep
from openft.api.multipart import form_description, read_multipart
from openft.errors import InvalidRequest
from openft.protocol.uploads import CompleteUploadRequest, CreateUploadRequest, Upload, UploadPart
from openft.service.quotas import Limits

router = APIRouter(prefix="/uploads", tags=["uploads"])

ADD_PART_FORM = form_description(["data"], {"data": {"type": "string", "format": "binary"}})


@router.post("")
def create_upload(body: CreateUploadRequest, response: Response, services: ServicesDep, caller: CallerDep) -> Upload:
    limits = Limits()
    upload = services.uploads.create(caller.organization, body, limits)
    response.headers.update(limits.headers())
    return upload


@router.post("/{upload_id}/parts", openapi_extra=ADD_PART_FORM)
async def add_upload_part(upload_id: str, request: Request, services: ServicesDep, caller: CallerDep) -> UploadPart:
    part_id, writer = services.uploads.open_part_writer(caller.organization, upload_id)
    try:
        form = await read_multipart(
            request,
            lambda _field, _filename: writer,
            max_file_bytes=services.settings.max_upload_part_bytes,
            file_fields=("data",),
        )
    except BaseException:
        writer.discard()  # also when refused (or cut off) before the data part began
        raise
    if "data" not in form.files:
        writer.discard()
        raise InvalidRequest("Missing required parameter: 'data'.", param="data", code="missing_required_parameter")
    return await run_in_threadpool(services.uploads.add_part, caller.organization, upload_id, part_id, writer)


@router.post("/{upload_id}/complete")
def complete_upload(upload_id: str, body: CompleteUploadRequest, services: ServicesDep, caller: CallerDep) -> Upload:
    return services.uploads.complete(caller.organization, upload_id, body)


@router.post("/{upload_id}/cancel")
def cancel_upload(upload_id: str, services: ServicesDep, caller: CallerDep) -> Upload:
    return services.uploads.cancel(caller.organization, upload_id)

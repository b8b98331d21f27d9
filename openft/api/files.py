"""/v1/files"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from openft.api.dependencies import CallerDep, ServicesDep
from openft.api.multipart import form_description, read_multipart
from openft.errors import InvalidRequest, PayloadTooLarge
from openft.protocol.common import DeletedObject
from openft.protocol.files import MAX_EXPIRY_SECONDS, MIN_EXPIRY_SECONDS, UPLOAD_PURPOSES, FileList, FileObject
from openft.service.files import MAX_LIST_LIMIT, check_purpose, parse_expires_after
from openft.service.quotas import Limits

router = APIRouter(prefix="/files", tags=["files"])

CREATE_FILE_FORM = form_description(
    ["file", "purpose"],
    {
        "file": {"type": "string", "format": "binary"},
        "purpose": {"type": "string", "enum": list(UPLOAD_PURPOSES)},
        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
        "expires_after[seconds]": {"type": "integer", "minimum": MIN_EXPIRY_SECONDS, "maximum": MAX_EXPIRY_SECONDS},
    },
)


@router.post("", openapi_extra=CREATE_FILE_FORM)
async def create_file(request: Request, response: Response, services: ServicesDep, caller: CallerDep) -> FileObject:
    new_file = services.files.open_writer(caller.organization)  # 429 at the hourly limit, before the body
    writer = new_file.writer
    try:
        form = await read_multipart(
            request, lambda _field, _filename: writer, max_file_bytes=new_file.max_bytes, file_fields=("file",)
        )
    except PayloadTooLarge as error:  # by its Content-Length or while streaming: which limit was it?
        writer.discard()
        raise new_file.too_large(error) from None
    except BaseException:
        writer.discard()  # also when refused before the file part began
        raise
    try:
        received = form.files.get("file")
        if received is None:
            raise InvalidRequest("Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
        purpose = check_purpose(form.fields.get("purpose"))
        expires = parse_expires_after(
            form.fields.get("expires_after[anchor]"), form.fields.get("expires_after[seconds]")
        )
    except BaseException:
        writer.discard()
        raise
    limits = Limits()
    created = await run_in_threadpool(
        services.files.create,
        caller.organization,
        new_file.id,
        writer,
        filename=received.filename or "upload",
        purpose=purpose,
        expires_after_seconds=expires,
        limits=limits,
    )
    response.headers.update(limits.headers())
    return created


@router.get("")
def list_files(
    services: ServicesDep,
    caller: CallerDep,
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = MAX_LIST_LIMIT,
    order: Literal["asc", "desc"] = "desc",
) -> FileList:
    return services.files.list(caller.organization, purpose=purpose, after=after, limit=limit, order=order)


@router.get("/{file_id}")
def retrieve_file(file_id: str, services: ServicesDep, caller: CallerDep) -> FileObject:
    return services.files.retrieve(caller.organization, file_id)


@router.delete("/{file_id}")
def delete_file(file_id: str, services: ServicesDep, caller: CallerDep) -> DeletedObject:
    return services.files.delete(caller.organization, file_id)


@router.get("/{file_id}/content")
def file_content(file_id: str, services: ServicesDep, caller: CallerDep) -> StreamingResponse:
    record, chunks = services.files.open_content(caller.organization, file_id)
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={
            "content-length": str(record.bytes),
            "content-disposition": f"attachment; filename*=UTF-8''{quote(record.filename)}",
        },
    )

"""/v1/models. Ids may hold `/` (sent as `%2F`, decoded before routing), hence the path converter."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from openft.api.dependencies import CallerDep, ServicesDep
from openft.protocol.common import DeletedObject
from openft.protocol.models import ExportFormat, Model, ModelList

router = APIRouter(prefix="/models", tags=["models"])

CHUNK_BYTES = 1024 * 1024


@router.get("")
def list_models(services: ServicesDep, caller: CallerDep) -> ModelList:
    return services.models.list(caller.organization)


# Before the catch-all retrieve route, which would take `…/export` for part of a model id.
@router.get("/{model_id:path}/export", response_class=StreamingResponse)
def export_model(
    model_id: str, services: ServicesDep, caller: CallerDep, format: ExportFormat = "merged"
) -> StreamingResponse:
    """An openft extension (docs/export.md): the model as a .tar.gz, `peft` (the adapter),
    `merged` (a standalone Hugging Face model) or `gguf` (llama.cpp/Ollama). Built before the
    first byte is sent."""
    export = services.exports.build(caller.organization, model_id, format)
    handle = export.open()
    size = _size(handle)
    return StreamingResponse(
        _chunks(handle),
        media_type="application/gzip",
        headers={
            "content-length": str(size),
            "content-disposition": f"attachment; filename*=UTF-8''{quote(export.filename)}",
        },
    )


@router.get("/{model_id:path}")
def retrieve_model(model_id: str, services: ServicesDep, caller: CallerDep) -> Model:
    return services.models.retrieve(caller.organization, model_id)


@router.delete("/{model_id:path}")
def delete_model(model_id: str, services: ServicesDep, caller: CallerDep) -> DeletedObject:
    return services.models.delete(caller.organization, model_id)


def _size(handle: BinaryIO) -> int:
    return os.fstat(handle.fileno()).st_size


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk

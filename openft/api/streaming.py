"""Server-sent events as the SDKs read them: `data: <json>` frames, `data: [DONE]` at the end, and
one final `{"error": …}` frame when something fails after the stream has begun."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from openft.api.errors import INTERNAL_ERROR_MESSAGE
from openft.errors import ServiceError
from openft.protocol.common import ErrorDetail, ErrorResponse

log = logging.getLogger(__name__)


def event_stream(chunks: AsyncGenerator[Any, None]) -> StreamingResponse:
    """A response that stops `chunks` (cancelling its generation) when the client disconnects."""
    return StreamingResponse(_frames(chunks), media_type="text/event-stream", headers={"cache-control": "no-cache"})


async def _frames(chunks: AsyncGenerator[BaseModel, None]) -> AsyncIterator[str]:
    try:
        async with aclosing(chunks):
            async for chunk in chunks:
                yield f"data: {chunk.model_dump_json()}\n\n"
    except ServiceError as error:
        yield _error_frame(ErrorDetail(message=error.message, type=error.type, param=error.param, code=error.code))
        return
    except Exception:
        log.exception("a stream failed after it had begun")
        yield _error_frame(ErrorDetail(message=INTERNAL_ERROR_MESSAGE, type="server_error", code="server_error"))
        return
    yield "data: [DONE]\n\n"


def _error_frame(detail: ErrorDetail) -> str:
    return f"data: {json.dumps(ErrorResponse(error=detail).model_dump())}\n\n"

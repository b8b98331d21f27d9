"""/v1/chat/completions and the legacy /v1/completions.

Generation never runs on a route's thread: the service awaits the engine's scheduler. A client
that goes away cancels its generation: streams through the response's own disconnect watch,
other requests through `cancel_on_disconnect`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response

from openft.api.dependencies import CallerDep, ServicesDep
from openft.api.streaming import event_stream
from openft.protocol.chat import ChatCompletionRequest, CompletionRequest

router = APIRouter(tags=["inference"])
T = TypeVar("T")
CLIENT_CLOSED_REQUEST = 499  # nginx's status for it; nobody reads it, the client is gone


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest, services: ServicesDep, caller: CallerDep, request: Request
) -> Any:
    if body.stream:
        return await _stream(request, services.chat.chat_stream(caller.organization, body))
    return await cancel_on_disconnect(request, services.chat.chat(caller.organization, body))


@router.post("/completions", response_model=None)
async def create_completion(body: CompletionRequest, services: ServicesDep, caller: CallerDep, request: Request) -> Any:
    if body.stream:
        return await _stream(request, services.chat.complete_stream(caller.organization, body))
    return await cancel_on_disconnect(request, services.chat.complete(caller.organization, body))


async def _stream(request: Request, started: Awaitable[AsyncGenerator[Any, None]]) -> Response:
    """An event stream, once its first token is in (errors before it are plain error responses)."""
    chunks = await cancel_on_disconnect(request, started)
    return chunks if isinstance(chunks, Response) else event_stream(chunks)


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T | Response:
    """Await `work`, cancelling it if the client disconnects first (its body is read by now, so
    the next ASGI message can only be the disconnect)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this route itself was cancelled (shutdown): so is its work
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass

"""/v1/chat/completions and the legacy /v1/completions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from openft.api.dependencies import CallerDep, ServicesDep
from openft.api.streaming import event_stream
from openft.protocol.chat import ChatCompletion, ChatCompletionRequest, Completion, CompletionRequest

router = APIRouter(tags=["inference"])


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(body: ChatCompletionRequest, services: ServicesDep, caller: CallerDep) -> Any:
    if body.stream:
        chunks = await run_in_threadpool(services.inference.chat_stream, caller.organization, body)
        return event_stream(chunks)
    result: ChatCompletion = await run_in_threadpool(services.inference.chat, caller.organization, body)
    return result


@router.post("/completions", response_model=None)
async def create_completion(body: CompletionRequest, services: ServicesDep, caller: CallerDep) -> Any:
    if body.stream:
        chunks = await run_in_threadpool(services.inference.complete_stream, caller.organization, body)
        return event_stream(chunks)
    result: Completion = await run_in_threadpool(services.inference.complete, caller.organization, body)
    return result

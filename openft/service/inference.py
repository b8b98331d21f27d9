"""Chat Completions and Completions over base, fine-tuned and checkpoint models.

Each base model is loaded once, on first use, into an engine `ModelServer`; fine-tuned models are
LoRA adapters it switches per request. Everything here is blocking: the API runs it in threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from openft import ids
from openft.config import Settings
from openft.errors import InvalidRequest
from openft.protocol.chat import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChoiceDelta,
    ChoiceLogprobs,
    ChunkChoice,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    SamplingRequest,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from openft.service.catalog import ModelCatalog, ResolvedModel
from openft.service.models import BaseModelRegistry

if TYPE_CHECKING:
    from openft.engine.generate import Delta, GenerationParams, ModelServer

log = logging.getLogger(__name__)


class InferenceService:
    def __init__(self, catalog: ModelCatalog, base_models: BaseModelRegistry, settings: Settings) -> None:
        self.catalog = catalog
        self.base_models = base_models
        self.settings = settings
        self._servers: dict[str, ModelServer] = {}
        self._loading = threading.Lock()
        catalog.on_delete.append(self.forget)

    def forget(self, name: str) -> None:
        """A fine-tuned model was deleted: drop its adapter from memory."""
        for server in list(self._servers.values()):
            server.unload_adapter(name)

    # --- chat ---------------------------------------------------------------------------------

    def chat(self, organization: str, request: ChatCompletionRequest) -> ChatCompletion:
        server, prompt, params, adapter = self._prepare_chat(organization, request)
        result = server.generate(prompt, params, adapter)
        return ChatCompletion(
            id=ids.new_id("chatcmpl-"),
            created=ids.now(),
            model=request.model,
            choices=[
                ChatChoice(
                    index=choice.index,
                    message=AssistantMessage(content=choice.text),
                    finish_reason=choice.finish_reason,
                    logprobs=ChoiceLogprobs(content=_logprobs(choice.logprobs)) if params.logprobs else None,
                )
                for choice in result.choices
            ],
            usage=_usage(result.prompt_tokens, result.completion_tokens),
        )

    def chat_stream(self, organization: str, request: ChatCompletionRequest) -> Iterator[ChatCompletionChunk]:
        """Checks everything and starts generating before returning, so errors come before streaming."""
        server, prompt, params, adapter = self._prepare_chat(organization, request)
        deltas = server.stream(prompt, params, adapter)
        return self._chat_chunks(request, deltas, len(prompt), params)

    def _chat_chunks(
        self, request: ChatCompletionRequest, deltas: Iterator[Delta], prompt_tokens: int, params: GenerationParams
    ) -> Iterator[ChatCompletionChunk]:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        identity = {"id": ids.new_id("chatcmpl-"), "created": ids.now(), "model": request.model}
        started: set[int] = set()
        completion_tokens = 0
        for delta in deltas:
            choices = []
            if delta.index not in started:
                started.add(delta.index)
                choices.append(ChunkChoice(index=delta.index, delta=ChoiceDelta(role="assistant", content="")))
            if delta.text or delta.finish_reason is None:
                logprobs = ChoiceLogprobs(content=_logprobs(delta.logprobs)) if params.logprobs else None
                choices.append(ChunkChoice(index=delta.index, delta=ChoiceDelta(content=delta.text), logprobs=logprobs))
            if delta.finish_reason is not None:
                completion_tokens += delta.completion_tokens
                choices.append(ChunkChoice(index=delta.index, delta=ChoiceDelta(), finish_reason=delta.finish_reason))
            for choice in choices:
                yield ChatCompletionChunk(**identity, choices=[choice])
        if include_usage:
            yield ChatCompletionChunk(**identity, choices=[], usage=_usage(prompt_tokens, completion_tokens))

    def _prepare_chat(
        self, organization: str, request: ChatCompletionRequest
    ) -> tuple[ModelServer, list[int], GenerationParams, tuple[str, Any] | None]:
        resolved = self.catalog.resolve(organization, request.model)
        server = self._server(resolved.base_model)
        messages = [message.model_dump(exclude_none=True) for message in request.messages]
        try:
            prompt = server.chat_prompt(messages)
        except Exception as error:  # a template that can't render these messages
            raise InvalidRequest(
                f"The messages can't be rendered: {error}", param="messages", code="invalid_value"
            ) from None
        if request.top_logprobs and not request.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs to be true.", param="top_logprobs", code="invalid_value")
        max_tokens = request.max_completion_tokens or request.max_tokens
        params = self._params(request, max_tokens, bool(request.logprobs), request.top_logprobs)
        self._check_length(server, prompt, "messages")
        return server, prompt, params, _adapter(resolved)

    # --- legacy completions -------------------------------------------------------------------

    def complete(self, organization: str, request: CompletionRequest) -> Completion:
        server, prompts, params, adapter = self._prepare_completion(organization, request)
        choices: list[CompletionChoice] = []
        prompt_tokens = completion_tokens = 0
        for prompt_index, prompt in enumerate(prompts):
            result = server.generate(prompt, params, adapter)
            prompt_tokens += result.prompt_tokens
            completion_tokens += result.completion_tokens
            for choice in result.choices:
                choices.append(
                    CompletionChoice(
                        index=prompt_index * params.n + choice.index,
                        text=choice.text,
                        finish_reason=choice.finish_reason,
                        logprobs=_completion_logprobs(choice.logprobs) if params.logprobs else None,
                    )
                )
        return Completion(
            id=ids.new_id("cmpl-"),
            created=ids.now(),
            model=request.model,
            choices=choices,
            usage=_usage(prompt_tokens, completion_tokens),
        )

    def complete_stream(self, organization: str, request: CompletionRequest) -> Iterator[Completion]:
        server, prompts, params, adapter = self._prepare_completion(organization, request)
        first = server.stream(prompts[0], params, adapter)
        return self._completion_chunks(request, server, prompts, params, adapter, first)

    def _completion_chunks(
        self,
        request: CompletionRequest,
        server: ModelServer,
        prompts: list[list[int]],
        params: GenerationParams,
        adapter: tuple[str, Any] | None,
        first: Iterator[Delta],
    ) -> Iterator[Completion]:
        identity = {"id": ids.new_id("cmpl-"), "created": ids.now(), "model": request.model}
        prompt_tokens = completion_tokens = 0
        for prompt_index, prompt in enumerate(prompts):
            deltas = first if prompt_index == 0 else server.stream(prompt, params, adapter)
            prompt_tokens += len(prompt)
            for delta in deltas:
                completion_tokens += delta.completion_tokens
                logprobs = _completion_logprobs(delta.logprobs) if params.logprobs else None
                choice = CompletionChoice(
                    index=prompt_index * params.n + delta.index,
                    text=delta.text,
                    finish_reason=delta.finish_reason,
                    logprobs=logprobs,
                )
                yield Completion(**identity, choices=[choice])
        if request.stream_options and request.stream_options.include_usage:
            yield Completion(**identity, choices=[], usage=_usage(prompt_tokens, completion_tokens))

    def _prepare_completion(
        self, organization: str, request: CompletionRequest
    ) -> tuple[ModelServer, list[list[int]], GenerationParams, tuple[str, Any] | None]:
        resolved = self.catalog.resolve(organization, request.model)
        server = self._server(resolved.base_model)
        texts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        prompts = [server.completion_prompt(text) for text in texts]
        if any(not prompt for prompt in prompts):
            raise InvalidRequest("A prompt is empty.", param="prompt", code="invalid_value")
        params = self._params(request, request.max_tokens, request.logprobs is not None, request.logprobs)
        for prompt in prompts:
            self._check_length(server, prompt, "prompt")
        return server, prompts, params, _adapter(resolved)

    # --- shared -------------------------------------------------------------------------------

    def _params(
        self, request: SamplingRequest, max_tokens: int | None, logprobs: bool, top_logprobs: int | None
    ) -> GenerationParams:
        from openft.engine.generate import GenerationParams

        return GenerationParams(
            max_new_tokens=max_tokens if max_tokens is not None else (self.settings.default_max_tokens or None),
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            n=request.n or 1,
            stop=request.stop_sequences,
            seed=request.seed,
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0,
            logprobs=logprobs,
            top_logprobs=top_logprobs or 0,
        )

    def _check_length(self, server: ModelServer, prompt: Sequence[int], param: str) -> None:
        if len(prompt) >= server.context_length:
            raise InvalidRequest(
                f"This model's maximum context length is {server.context_length} tokens. However, your "
                f"{param} resulted in {len(prompt)} tokens.",
                param=param,
                code="context_length_exceeded",
            )

    def _server(self, base_model: str) -> ModelServer:
        """The base model's server, loaded once; a first load takes seconds (logged, not an error)."""
        with self._loading:
            server = self._servers.get(base_model)
            if server is None:
                from openft.engine.generate import ModelServer

                started = time.monotonic()
                server = ModelServer(
                    self.base_models.local_directory(base_model),
                    device=self.settings.inference_device,
                    max_loaded_adapters=self.settings.max_loaded_adapters,
                )
                log.info("loaded base model %s for inference in %.1f s", base_model, time.monotonic() - started)
                self._servers[base_model] = server
            return server


def _adapter(resolved: ResolvedModel) -> tuple[str, Any] | None:
    return (resolved.name, resolved.adapter_dir) if resolved.adapter_dir is not None else None


def _usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens
    )


def _logprobs(entries: Sequence[Any] | None) -> list[TokenLogprob]:
    return [
        TokenLogprob(
            token=entry.token,
            logprob=entry.logprob,
            bytes=entry.bytes,
            top_logprobs=[
                TopLogprob(token=top.token, logprob=top.logprob, bytes=top.bytes) for top in entry.top_logprobs
            ],
        )
        for entry in entries or []
    ]


def _completion_logprobs(entries: Sequence[Any] | None) -> CompletionLogprobs:
    entries = entries or []
    offsets, position = [], 0
    for entry in entries:
        offsets.append(position)
        position += len(entry.token)
    return CompletionLogprobs(
        tokens=[entry.token for entry in entries],
        token_logprobs=[entry.logprob for entry in entries],
        top_logprobs=[{top.token: top.logprob for top in entry.top_logprobs} for entry in entries],
        text_offset=offsets,
    )

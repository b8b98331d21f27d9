"""Chat Completions and Completions over base, fine-tuned and checkpoint models.

Each base model is loaded once (at start for `OPENFT_PRELOAD_MODELS`, else on first use) into an
engine `ModelServer`, which batches every request for that base, fine-tuned or not. This service
decides what a request may ask for and who gets in: per-organization and total bounds on requests
in flight (429 over them), bounds on the tokens one request may ask for (400). It never blocks the
event loop: generation runs on the engine's thread, loading on a thread of its own, and the
little blocking work here (a database lookup, the chat template) in the default executor.
Cancelling the coroutine (a client that went away) cancels the generation.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from openft import ids
from openft.config import Settings
from openft.errors import InvalidRequest, RateLimited, ServerError
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
    from openft.engine.generate import Delta, GenerationParams
    from openft.engine.serving import ModelServer, Request

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 1  # a slot frees whenever any request in flight ends: come back soon


@dataclass
class _Prepared:
    server: ModelServer
    prompts: list[list[int]]
    params: GenerationParams
    adapter: tuple[str, Any] | None


class ChatService:
    def __init__(self, catalog: ModelCatalog, base_models: BaseModelRegistry, settings: Settings) -> None:
        self.catalog = catalog
        self.base_models = base_models
        self.settings = settings
        self._loads: dict[str, concurrent.futures.Future[ModelServer]] = {}
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()  # requests per organization, from admission to their end
        catalog.on_delete.append(self.forget)

    def forget(self, name: str) -> None:
        """A fine-tuned model was deleted: drop its adapter from memory."""
        for server in self._loaded():
            server.unload_adapter(name)

    def preload(self) -> None:
        """Start loading the base models named by OPENFT_PRELOAD_MODELS, in the background."""
        names = self.settings.preload_model_ids
        for model in self.base_models.list().data if names == ["all"] else []:
            self._load(model.id)
        for name in names if names != ["all"] else []:
            self._load(name)

    def status(self) -> dict[str, Any]:
        """Each base model's state (loading, ready, failed) and its scheduler's figures, for /health."""
        with self._lock:
            loads = dict(self._loads)
        models: dict[str, Any] = {}
        for name, future in loads.items():
            if not future.done():
                models[name] = {"state": "loading"}
            elif future.exception() is not None:
                models[name] = {"state": "failed"}
            else:
                stats = dataclasses.asdict(future.result().stats())
                # /health needs no key: say how many organizations decode, never which
                stats["organizations_decoding"] = len(stats.pop("running_by_key"))
                models[name] = {"state": "ready", **stats}
        with self._lock:
            in_flight = dict(self._in_flight)
        return {"requests_in_flight": sum(in_flight.values()), "models": models}

    def close(self) -> None:
        for server in self._loaded():
            server.close()

    # --- chat ---------------------------------------------------------------------------------

    async def chat(self, organization: str, request: ChatCompletionRequest) -> ChatCompletion:
        with self._admitted(organization):
            prepared = await self._prepare_chat(organization, request)
            choices: dict[int, ChatChoice] = {}
            texts: dict[int, list[str]] = {}
            entries: dict[int, list[Any]] = {}
            completion_tokens = 0
            async with aclosing(_generate(prepared, organization)) as deltas:
                async for _, delta in deltas:
                    texts.setdefault(delta.index, []).append(delta.text)
                    entries.setdefault(delta.index, []).extend(delta.logprobs or [])
                    if delta.finish_reason is not None:
                        completion_tokens += delta.completion_tokens
                        choices[delta.index] = _chat_choice(delta, texts, entries, prepared.params.logprobs)
        return ChatCompletion(
            id=ids.new_id("chatcmpl-"),
            created=ids.now(),
            model=request.model,
            choices=[choices[i] for i in sorted(choices)],
            usage=_usage(len(prepared.prompts[0]), completion_tokens),
        )

    async def chat_stream(
        self, organization: str, request: ChatCompletionRequest
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        """Checks everything and waits for the first token before returning, so that errors come
        before the stream begins."""
        deltas = await self._started(organization, partial(self._prepare_chat, organization, request))
        return self._chat_chunks(request, deltas)

    async def _chat_chunks(
        self, request: ChatCompletionRequest, deltas: AsyncGenerator[tuple[_Prepared, tuple[int, Delta]], None]
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        identity = {"id": ids.new_id("chatcmpl-"), "created": ids.now(), "model": request.model}
        started: set[int] = set()
        completion_tokens = prompt_tokens = 0
        async with aclosing(deltas):
            async for prepared, (_, delta) in deltas:
                prompt_tokens = len(prepared.prompts[0])
                choices = []
                if delta.index not in started:
                    started.add(delta.index)
                    choices.append(ChunkChoice(index=delta.index, delta=ChoiceDelta(role="assistant", content="")))
                if delta.text or delta.logprobs:
                    logprobs = ChoiceLogprobs(content=_logprobs(delta.logprobs)) if prepared.params.logprobs else None
                    choices.append(
                        ChunkChoice(index=delta.index, delta=ChoiceDelta(content=delta.text), logprobs=logprobs)
                    )
                if delta.finish_reason is not None:
                    completion_tokens += delta.completion_tokens
                    choices.append(
                        ChunkChoice(index=delta.index, delta=ChoiceDelta(), finish_reason=delta.finish_reason)
                    )
                for choice in choices:
                    yield ChatCompletionChunk(**identity, choices=[choice])
        if include_usage:
            yield ChatCompletionChunk(**identity, choices=[], usage=_usage(prompt_tokens, completion_tokens))

    async def _prepare_chat(self, organization: str, request: ChatCompletionRequest) -> _Prepared:
        resolved = await asyncio.to_thread(self.catalog.resolve, organization, request.model)
        server = await self._server(resolved.base_model)
        messages = [message.model_dump(exclude_none=True) for message in request.messages]
        try:
            prompt = await asyncio.to_thread(server.chat_prompt, messages)
        except Exception as error:  # a template that can't render these messages
            raise InvalidRequest(
                f"The messages can't be rendered: {error}", param="messages", code="invalid_value"
            ) from None
        if request.top_logprobs and not request.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs to be true.", param="top_logprobs", code="invalid_value")
        max_tokens = request.max_completion_tokens or request.max_tokens
        params = self._params(request, max_tokens, bool(request.logprobs), request.top_logprobs)
        self._check_length(server, prompt, "messages")
        max_param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        self._check_request_tokens(server, [prompt], params, max_param if max_tokens else "n")
        return _Prepared(server, [prompt], params, _adapter(resolved))

    # --- legacy completions -------------------------------------------------------------------

    async def complete(self, organization: str, request: CompletionRequest) -> Completion:
        with self._admitted(organization):
            prepared = await self._prepare_completion(organization, request)
            n = prepared.params.n
            texts: dict[int, list[str]] = {}
            entries: dict[int, list[Any]] = {}
            choices: dict[int, CompletionChoice] = {}
            completion_tokens = 0
            async with aclosing(_generate(prepared, organization)) as deltas:
                async for prompt_index, delta in deltas:
                    index = prompt_index * n + delta.index
                    texts.setdefault(index, []).append(delta.text)
                    entries.setdefault(index, []).extend(delta.logprobs or [])
                    if delta.finish_reason is not None:
                        completion_tokens += delta.completion_tokens
                        logprobs = _completion_logprobs(entries[index]) if prepared.params.logprobs else None
                        text = "".join(texts[index])
                        choices[index] = CompletionChoice(
                            index=index, text=text, finish_reason=delta.finish_reason, logprobs=logprobs
                        )
        return Completion(
            id=ids.new_id("cmpl-"),
            created=ids.now(),
            model=request.model,
            choices=[choices[i] for i in sorted(choices)],
            usage=_usage(sum(len(prompt) for prompt in prepared.prompts), completion_tokens),
        )

    async def complete_stream(self, organization: str, request: CompletionRequest) -> AsyncGenerator[Completion, None]:
        deltas = await self._started(organization, partial(self._prepare_completion, organization, request))
        return self._completion_chunks(request, deltas)

    async def _completion_chunks(
        self, request: CompletionRequest, deltas: AsyncGenerator[tuple[_Prepared, tuple[int, Delta]], None]
    ) -> AsyncGenerator[Completion, None]:
        identity = {"id": ids.new_id("cmpl-"), "created": ids.now(), "model": request.model}
        completion_tokens = prompt_tokens = 0
        async with aclosing(deltas):
            async for prepared, (prompt_index, delta) in deltas:
                prompt_tokens = sum(len(prompt) for prompt in prepared.prompts)
                completion_tokens += delta.completion_tokens
                logprobs = _completion_logprobs(delta.logprobs) if prepared.params.logprobs else None
                choice = CompletionChoice(
                    index=prompt_index * prepared.params.n + delta.index,
                    text=delta.text,
                    finish_reason=delta.finish_reason,
                    logprobs=logprobs,
                )
                yield Completion(**identity, choices=[choice])
        if request.stream_options and request.stream_options.include_usage:
            yield Completion(**identity, choices=[], usage=_usage(prompt_tokens, completion_tokens))

    async def _prepare_completion(self, organization: str, request: CompletionRequest) -> _Prepared:
        texts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        if len(texts) > self.settings.max_completion_prompts:
            raise InvalidRequest(
                f"At most {self.settings.max_completion_prompts} prompts can be sent in one request; "
                f"you sent {len(texts)}.",
                param="prompt",
                code="invalid_value",
            )
        resolved = await asyncio.to_thread(self.catalog.resolve, organization, request.model)
        server = await self._server(resolved.base_model)
        prompts = await asyncio.to_thread(lambda: [server.completion_prompt(text) for text in texts])
        if any(not prompt for prompt in prompts):
            raise InvalidRequest("A prompt is empty.", param="prompt", code="invalid_value")
        params = self._params(request, request.max_tokens, request.logprobs is not None, request.logprobs)
        for prompt in prompts:
            self._check_length(server, prompt, "prompt")
        self._check_request_tokens(server, prompts, params, "max_tokens")
        return _Prepared(server, prompts, params, _adapter(resolved))

    # --- admission and generation -------------------------------------------------------------

    def _admitted(self, organization: str) -> _Slot:
        """A place among the requests in flight, or 429 at once when the bounds are reached."""
        settings = self.settings
        with self._lock:
            total = sum(self._in_flight.values())
            if self._in_flight[organization] >= settings.max_requests_in_flight_per_organization:
                raise RateLimited(
                    f"Too many requests in flight for organization {organization}: at most "
                    f"{settings.max_requests_in_flight_per_organization} chat and completion requests at once. "
                    "Please retry when some have finished.",
                    retry_after_seconds=RETRY_AFTER_SECONDS,
                )
            if total >= settings.max_requests_in_flight:
                raise RateLimited(
                    f"The server is at its limit of {settings.max_requests_in_flight} chat and completion "
                    "requests in flight. Please retry shortly.",
                    retry_after_seconds=RETRY_AFTER_SECONDS,
                )
            self._in_flight[organization] += 1
        return _Slot(partial(self._leave, organization))

    def _leave(self, organization: str) -> None:
        with self._lock:
            self._in_flight[organization] -= 1
            if not self._in_flight[organization]:
                del self._in_flight[organization]

    async def _started(
        self, organization: str, prepare: Callable[[], Any]
    ) -> AsyncGenerator[tuple[_Prepared, Any], None]:
        """Admit, prepare and start a streamed generation; returns once its first event is in."""
        slot = self._admitted(organization)
        events: AsyncGenerator[tuple[int, Delta], None] | None = None
        try:
            prepared: _Prepared = await prepare()
            events = _generate(prepared, organization)
            first = await anext(events)
        except BaseException:
            if events is not None:
                await events.aclose()
            slot.__exit__()
            raise
        stream = _streamed(prepared, first, events, slot)
        # A stream whose response never starts (its client left first) is never iterated, so its
        # `finally` never runs: give the place back when it is collected.
        weakref.finalize(stream, slot.__exit__)
        return stream

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

    def _check_request_tokens(
        self, server: ModelServer, prompts: list[list[int]], params: GenerationParams, param: str
    ) -> None:
        """Bound the work one request can ask for: every choice's prompt and completion tokens."""
        requested = sum(
            params.n * min(server.context_length, len(prompt) + (params.max_new_tokens or server.context_length))
            for prompt in prompts
        )
        limit = self.settings.max_tokens_per_request
        if requested > limit:
            raise InvalidRequest(
                f"This request asks for up to {requested} tokens (prompt and completion tokens of every choice "
                f"of every prompt), more than this server's limit of {limit}. Lower n or {param}, or send fewer "
                "prompts.",
                param="n" if params.n > 1 else param,
                code="too_many_tokens",
            )

    async def _server(self, base_model: str) -> ModelServer:
        """The base model's server; waiting for its load (seconds, once) blocks nothing else."""
        return await asyncio.wrap_future(self._load(base_model))

    def _load(self, base_model: str) -> concurrent.futures.Future[ModelServer]:
        with self._lock:
            future = self._loads.get(base_model)
            done = future is not None and future.done()
            failed = done and (future.exception() is not None or future.result().closed)  # type: ignore[union-attr]
            if future is None or failed:  # a failed load, or a server that stopped, is loaded again
                future = concurrent.futures.Future()
                future.set_running_or_notify_cancel()  # so that no waiter's cancellation cancels the load
                self._loads[base_model] = future
                threading.Thread(target=self._load_into, args=(base_model, future), daemon=True).start()
            return future

    def _load_into(self, base_model: str, future: concurrent.futures.Future[ModelServer]) -> None:
        from openft.engine.serving import ModelServer

        started = time.monotonic()
        settings = self.settings
        try:
            server = ModelServer(
                self.base_models.local_directory(base_model),
                device=settings.inference_device,
                dtype=settings.inference_dtype,
                max_loaded_adapters=settings.max_loaded_adapters,
                max_batch_size=settings.max_batch_size,
                prefill_chunk_tokens=settings.prefill_chunk_tokens,
                threads=settings.serving_threads,
                cpu_share_dir=settings.resolved_cpu_share_dir,
            )
        except Exception as error:
            log.exception("loading base model %s for inference failed", base_model)
            future.set_exception(error)
            return
        log.info("loaded base model %s for inference in %.1f s", base_model, time.monotonic() - started)
        future.set_result(server)

    def _loaded(self) -> list[ModelServer]:
        with self._lock:
            futures = list(self._loads.values())
        return [f.result() for f in futures if f.done() and f.exception() is None]


class _Slot:
    """A request's place in flight; left exactly once."""

    def __init__(self, leave: Callable[[], None]) -> None:
        self._leave: Callable[[], None] | None = leave

    def __enter__(self) -> _Slot:
        return self

    def __exit__(self, *_: object) -> None:
        leave, self._leave = self._leave, None
        if leave is not None:
            leave()


async def _generate(prepared: _Prepared, organization: str) -> AsyncGenerator[tuple[int, Delta], None]:
    """(prompt index, delta) of every prompt's choices as the engine produces them; closing the
    iterator early (or cancelling its consumer) cancels what is still generating."""
    mailbox = _Mailbox.of(asyncio.get_running_loop())
    events: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
    requests: list[Request] = []
    try:
        for index, prompt in enumerate(prepared.prompts):
            on_event = partial(mailbox.post, events, index)
            requests.append(prepared.server.submit(prompt, prepared.params, on_event, prepared.adapter, organization))
        unfinished = len(prepared.prompts) * prepared.params.n
        while unfinished:
            index, event = await events.get()
            if isinstance(event, BaseException):
                log.error("generation failed: %r", event)
                raise ServerError("The model failed to generate an answer.", code="server_error")
            if event.finish_reason is not None:
                unfinished -= 1
            yield index, event
    finally:
        for request in requests:
            request.cancel()


class _Mailbox:
    """Hands the engine's events to an event loop, waking it once for all the events that arrive
    together (a decode step's, for every stream) rather than once per event: every wake-up of
    another thread takes a core from the model's matrix products."""

    _by_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Mailbox]] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._letters: list[tuple[asyncio.Queue[tuple[int, Any]], tuple[int, Any]]] = []

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Mailbox:
        mailbox = cls._by_loop.get(loop)
        if mailbox is None:
            mailbox = cls._by_loop[loop] = cls(loop)
        return mailbox

    def post(self, events: asyncio.Queue[tuple[int, Any]], index: int, event: Any) -> None:
        """On the engine's thread."""
        with self._lock:
            self._letters.append((events, (index, event)))
            if len(self._letters) > 1:
                return  # a delivery is already on its way
        with suppress(RuntimeError):  # the event loop is gone: the server is shutting down
            self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            letters, self._letters = self._letters, []
        for events, letter in letters:
            events.put_nowait(letter)


async def _streamed(
    prepared: _Prepared, first: Any, events: AsyncGenerator[Any, None], slot: _Slot
) -> AsyncGenerator[tuple[_Prepared, Any], None]:
    try:
        async with aclosing(events):
            yield prepared, first
            async for event in events:
                yield prepared, event
    finally:
        slot.__exit__()


def _chat_choice(
    delta: Delta, texts: dict[int, list[str]], entries: dict[int, list[Any]], logprobs: bool
) -> ChatChoice:
    assert delta.finish_reason is not None
    return ChatChoice(
        index=delta.index,
        message=AssistantMessage(content="".join(texts[delta.index])),
        finish_reason=delta.finish_reason,
        logprobs=ChoiceLogprobs(content=_logprobs(entries[delta.index])) if logprobs else None,
    )


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

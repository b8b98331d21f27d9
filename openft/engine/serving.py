"""Serving one base model to many requests at once: continuous batching across LoRA adapters.

`ModelServer` keeps the base model in memory once, with up to `max_loaded_adapters` LoRA
adapters loaded into it through PEFT, and owns it from one scheduler thread. Any thread may
`submit` a request; the scheduler feeds it its events through a callback. Every step it:

1. admits waiting work while the batch has room, choosing the fairness key (an organization, to
   the caller) with the fewest rows decoding, and takes a row from the busiest key when one with
   nothing decoding would otherwise wait for a slot (the row recomputes its cache later);
2. prefills one prompt a chunk at a time (`prefill_chunk_tokens`), so a long prompt delays the
   running rows by one chunk per step, never by its whole length; the `n` choices of a request
   share that one prefill and join the batch as rows copying its cache;
3. runs one forward pass over every running row, each through its own adapter (`MultiLora`:
   every loaded adapter's matrices side by side, masked per row), and hands each row's logits to
   its `Decoding`. Finished and cancelled rows leave the batch and free their cache at once.

Seeded sampling gives each choice its own random stream, so a request's output does not depend on
what runs beside it; greedy output equals what the request gets alone (up to float rounding of
batched matrix products, which does not change the argmax in practice).

Threading: the model, the batch and the adapters are touched by the scheduler thread only.
`submit`, `Request.cancel`, `unload_adapter` and `stats` are safe from any thread; callbacks run
on the scheduler thread and must be quick (hand the event over, don't compute).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import queue
import threading
import time
import types
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from openft.engine.cpu_share import CpuShare
from openft.engine.data import render_completion_prompt, render_prompt
from openft.engine.devices import resolve_device, resolve_dtype, use_cpu_threads
from openft.engine.generate import (
    Choice,
    Decoding,
    Delta,
    GenerationParams,
    GenerationResult,
    PromptTooLong,
    TokenLogprob,
    TokenTexts,
    _context_length,
    _eos_ids,
    choice_generator,
)
from openft.engine.kv_cache import BatchCache
from openft.engine.lora import BASE_SLOT, MultiLora

logger = logging.getLogger(__name__)

AdapterRef = tuple[str, Path]  # (name, PEFT adapter dir); the name identifies the weights
Event = Delta | BaseException  # what a request's callback receives; an exception ends the request


class ServerClosed(RuntimeError):
    """The server was closed before the request finished."""


@dataclass(frozen=True)
class ServerStats:
    running: int  # rows (choices) in the decoding batch
    waiting: int  # requests, or taken-out rows, waiting to be prefilled or to join
    requests: int  # requests submitted and not yet finished or cancelled
    running_by_key: dict[str, int]
    loaded_adapters: list[str]  # least recently used first
    steps: int  # decode steps since start
    prefilled_tokens: int  # prompt tokens computed since start (once for all n choices of a request)
    preempted: int  # rows taken out for fairness since start
    cancelled: int  # requests cancelled since start


class Request:
    """A submitted request. `cancel` from any thread: its rows leave the batch at the next step."""

    def __init__(
        self,
        prompt_ids: list[int],
        params: GenerationParams,
        adapter: AdapterRef | None,
        key: str,
        on_event: Callable[[Event], None],
        server: ModelServer,
    ) -> None:
        self.prompt_ids = prompt_ids
        self.params = params
        self.adapter = adapter
        self.key = key
        self.on_event = on_event
        self.unfinished = params.n
        self.cancelled = False
        self.pinned = False  # holds its adapter in memory
        self._server = server

    def cancel(self) -> None:
        self.cancelled = True
        self._server._wake()


@dataclass
class _Row:
    """One choice of a request: a row of the batch while it decodes."""

    request: Request
    decoding: Decoding


@dataclass
class _Unit:
    """Tokens to prefill once for some rows: a new request's prompt for its choices, or a row's
    prompt and generated tokens when it rejoins after being taken out."""

    request: Request
    tokens: list[int]
    rows: list[_Row]
    order: int  # first come, first served within a key
    done: int = 0  # tokens prefilled so far
    cache: DynamicCache | None = None
    logits: torch.Tensor | None = None  # for the next token, once all tokens are prefilled


@dataclass
class _LoadedAdapter:
    path: Path
    slot: int  # in MultiLora
    users: int = 0  # unfinished requests; pinned while > 0
    doomed: bool = False  # unload requested while in use: delete when the last user is done


@dataclass
class _Counters:
    steps: int = 0
    prefilled_tokens: int = 0
    preempted: int = 0
    cancelled: int = 0


class ModelServer:
    """Serves one base model and its LoRA adapters to concurrent requests; see the module docstring."""

    def __init__(
        self,
        base_model_dir: Path,
        device: str = "auto",
        dtype: str = "auto",
        max_loaded_adapters: int = 8,
        max_batch_size: int = 16,
        prefill_chunk_tokens: int = 512,
        threads: int = 0,
        cpu_share_dir: Path | None = None,
    ) -> None:
        if max_loaded_adapters < 1 or max_batch_size < 1 or prefill_chunk_tokens < 1:
            raise ValueError("max_loaded_adapters, max_batch_size and prefill_chunk_tokens must be at least 1")
        started = time.perf_counter()
        self.device = resolve_device(device)
        # Before the scheduler thread starts: it takes the threads set here for its own.
        self._cpu_share: CpuShare | None = None
        if cpu_share_dir is not None and self.device.type == "cpu":
            self._cpu_share = CpuShare(cpu_share_dir, "serving", threads)  # sets a fixed count itself
        else:
            use_cpu_threads(threads)  # the process's: the API process runs torch for generation alone
        self._threads = torch.get_num_threads()
        self.dtype = resolve_dtype(dtype, self.device)
        self._tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(base_model_dir)
        base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=self.dtype, device_map=self.device)
        assert isinstance(base, PreTrainedModel)
        self._base = base.eval()
        if self.device.type == "cpu":
            _weight_major_linears(self._base)
        self._lora = MultiLora(self._base)
        self._adapters: OrderedDict[str, _LoadedAdapter] = OrderedDict()  # least recently used first
        self._max_adapters = max_loaded_adapters
        self._max_rows = max_batch_size
        self._chunk = prefill_chunk_tokens
        self._eos_ids = _eos_ids(self._base, self._tokenizer)
        self._context_length = _context_length(self._base)
        self._texts = TokenTexts(self._tokenizer)
        # Shared with other threads, under _lock.
        self._lock = threading.Condition()
        self._inbox: deque[Request] = deque()
        self._unloads: deque[tuple[str, threading.Event]] = deque()
        self._requests = 0
        self._closed = False
        self._snapshot = ServerStats(0, 0, 0, {}, [], 0, 0, 0, 0)
        # The scheduler thread's own.
        self._order = itertools.count()
        self._waiting: dict[str, deque[_Unit]] = {}
        self._prefilling: _Unit | None = None
        self._ready: list[_Unit] = []  # prefilled, with rows that found no room yet
        self._rows: list[_Row] = []  # the batch's rows, in cache order
        self._batch = BatchCache()
        self._counters = _Counters()
        self._thread = threading.Thread(target=self._run, name=f"openft-serve-{base_model_dir.name}", daemon=True)
        self._thread.start()
        logger.info(
            "loaded %s on %s (%s, %d threads) in %.1f s",
            base_model_dir,
            self.device,
            self.dtype,
            torch.get_num_threads(),
            time.perf_counter() - started,
        )

    @property
    def closed(self) -> bool:
        """Closed, or its scheduler stopped: it takes no more requests."""
        with self._lock:
            return self._closed

    @property
    def context_length(self) -> int:
        """Most tokens, prompt and completion together, a request can have."""
        return self._context_length

    @property
    def loaded_adapters(self) -> list[str]:
        """Names of the adapters in memory, least recently used first."""
        return self.stats().loaded_adapters

    def stats(self) -> ServerStats:
        """As of the end of the last scheduler step; `requests` as of now."""
        with self._lock:
            return dataclasses.replace(self._snapshot, requests=self._requests)

    def chat_prompt(self, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        """Token ids to generate the next assistant turn from, rendered as training does."""
        return render_prompt(self._tokenizer, messages)

    def completion_prompt(self, prompt: str) -> list[int]:
        """Token ids of a legacy completion prompt, rendered as training does."""
        return render_completion_prompt(self._tokenizer, prompt)

    def submit(
        self,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        on_event: Callable[[Event], None],
        adapter: AdapterRef | None = None,
        key: str = "",
    ) -> Request:
        """Queue a request; `on_event` receives its deltas (each choice's first delta comes as soon as
        its first token is chosen, its last has `finish_reason`), or one exception that ends it
        (an adapter that fails to load, a failed forward pass, the server closing)."""
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        if len(prompt_ids) >= self._context_length:
            raise PromptTooLong(len(prompt_ids), self._context_length)
        request = Request(list(prompt_ids), params, adapter, key, on_event, self)
        with self._lock:
            if self._closed:
                raise ServerClosed("the model server is closed")
            self._inbox.append(request)
            self._requests += 1
            self._lock.notify()
        return request

    def stream(
        self, prompt_ids: Sequence[int], params: GenerationParams, adapter: AdapterRef | None = None, key: str = ""
    ) -> Iterator[Delta]:
        """Blocking iterator over a request's deltas. A bad prompt raises here, a failed adapter at
        the first `next`; closing the iterator early cancels the request."""
        events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        request = self.submit(prompt_ids, params, events.put, adapter, key)
        return _iterate(request, events)

    def generate(
        self, prompt_ids: Sequence[int], params: GenerationParams, adapter: AdapterRef | None = None, key: str = ""
    ) -> GenerationResult:
        """Generate `params.n` choices, blocking."""
        texts: list[list[str]] = [[] for _ in range(params.n)]
        entries: list[list[TokenLogprob]] = [[] for _ in range(params.n)]
        choices: list[Choice] = []
        completion_tokens = 0
        for delta in self.stream(prompt_ids, params, adapter, key):
            i = delta.index
            texts[i].append(delta.text)
            entries[i].extend(delta.logprobs or [])
            if delta.finish_reason is not None:
                choices.append(
                    Choice(i, "".join(texts[i]), delta.finish_reason, entries[i] if params.logprobs else None)
                )
                completion_tokens += delta.completion_tokens
        choices.sort(key=lambda choice: choice.index)
        return GenerationResult(choices, len(prompt_ids), completion_tokens)

    def unload_adapter(self, name: str) -> None:
        """Free an adapter (its model was deleted); requests using it now finish first. Returns once
        the scheduler has taken note, at most a step later."""
        done = threading.Event()
        with self._lock:
            if self._closed:
                return
            self._unloads.append((name, done))
            self._lock.notify()
        while not done.wait(1.0) and self._thread.is_alive():
            pass

    def close(self) -> None:
        """Stop the scheduler; unfinished requests get ServerClosed."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join()

    def _wake(self) -> None:
        with self._lock:
            self._lock.notify()

    # The scheduler thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._take_new_work():
                self._step()
                self._publish()
        except BaseException:  # a bug of ours: fail everything rather than leave it hanging
            logger.exception("the scheduler of %s stopped", self._thread.name)
            with self._lock:
                self._closed = True
        self._shut_down()

    def _step(self) -> None:
        """One admission, prefill and decode step. A failed model pass fails only the requests that
        were in it; the others carry on."""
        # torch's threads are per thread: set them here, in the scheduler's.
        if self._cpu_share and (threads := self._cpu_share.share()) != self._threads:
            busy = "busy" if threads < self._threads else "idle"
            logger.info("generating on %d threads: training on this host is %s", threads, busy)
            self._threads = threads
        self._drop_cancelled()
        self._admit()
        if self._prefilling is not None:
            try:
                self._prefill()
            except Exception as error:  # the prefill only wrote to its own unit's cache
                logger.exception("prefill failed")
                if self._prefilling is not None:
                    self._abort(self._prefilling.request, error)
                    self._prefilling = None
        if self._rows:
            try:
                self._decode()
            except Exception as error:  # the batch's cache may be half-extended: drop it all
                logger.exception("decode step failed")
                for row in self._rows:
                    self._abort(row.request, error)
                self._rows = []
                self._batch.clear()

    def _shut_down(self) -> None:
        """Fail what is left, in the scheduler's hands or still in the inbox, with ServerClosed."""
        if self._cpu_share:
            self._cpu_share.close()
        closed = ServerClosed("the model server is closed")
        with self._lock:
            stranded, self._inbox = list(self._inbox), deque()
            unloads, self._unloads = list(self._unloads), deque()
        units = [unit for units in self._waiting.values() for unit in units] + self._ready
        units += [self._prefilling] if self._prefilling is not None else []
        requests = [unit.request for unit in units] + [row.request for row in self._rows] + stranded
        for request in {id(request): request for request in requests}.values():
            try:
                self._abort(request, closed)
            except Exception:  # one failure must not leave the others waiting
                logger.exception("failing a request at shutdown failed")
        self._waiting, self._ready, self._prefilling, self._rows = {}, [], None, []
        self._batch.clear()
        for _, done in unloads:
            done.set()
        self._publish()

    def _take_new_work(self) -> bool:
        """Move submitted requests and unloads into the scheduler's state, sleeping while there is
        nothing to do; False once the server is closed."""
        with self._lock:
            while not (self._closed or self._inbox or self._unloads or self._busy()):
                self._lock.wait()
            if self._closed:
                return False
            new, self._inbox = list(self._inbox), deque()
            unloads, self._unloads = list(self._unloads), deque()
        for name, done in unloads:
            self._unload(name)
            done.set()
        for request in new:
            self._enqueue(request)
        return True

    def _busy(self) -> bool:
        return bool(self._rows or self._prefilling or self._ready or any(self._waiting.values()))

    def _enqueue(self, request: Request) -> None:
        try:
            adapter = self._acquire(request.adapter) if request.adapter is not None else None
        except Exception as error:
            logger.exception("adapter %s failed to load", request.adapter)
            self._abort(request, error)
            return
        request.pinned = adapter is not None
        params = request.params
        budget = self._context_length - len(request.prompt_ids)
        if params.max_new_tokens is not None:
            budget = min(budget, params.max_new_tokens)
        rows = [
            _Row(request, Decoding(i, params, budget, self._texts, self._eos_ids, choice_generator(params.seed, i)))
            for i in range(params.n)
        ]
        self._waiting.setdefault(request.key, deque()).append(
            _Unit(request, request.prompt_ids, rows, next(self._order))
        )

    def _drop_cancelled(self) -> None:
        for key, units in self._waiting.items():
            self._waiting[key] = deque(unit for unit in units if not self._cancel_if_asked(unit.request))
        self._ready = [unit for unit in self._ready if not self._cancel_if_asked(unit.request)]
        if self._prefilling is not None and self._cancel_if_asked(self._prefilling.request):
            self._prefilling = None
        if any(row.request.cancelled for row in self._rows):
            self._keep_rows([i for i, row in enumerate(self._rows) if not self._cancel_if_asked(row.request)])

    def _cancel_if_asked(self, request: Request) -> bool:
        if request.cancelled and request.unfinished:
            request.unfinished = 0
            self._counters.cancelled += 1
            self._release(request)
        return request.cancelled

    # Admission ----------------------------------------------------------------------------------

    def _free_rows(self) -> int:
        reserved = len(self._prefilling.rows) if self._prefilling is not None else 0
        return self._max_rows - len(self._rows) - reserved

    def _running(self, key: str) -> int:
        return sum(1 for row in self._rows if row.request.key == key)

    def _admit(self) -> None:
        """Fill free rows, the key with the fewest running rows first; a prefilled unit's rows join
        before a new prefill starts for a key with as many."""
        self._make_room_for_starving_keys()
        while self._free_rows() > 0:
            ready = min(self._ready, key=self._priority, default=None)
            waiting = None
            if self._prefilling is None:
                waiting = min((units[0] for units in self._waiting.values() if units), key=self._priority, default=None)
            if ready is not None and (waiting is None or self._priority(ready) <= self._priority(waiting)):
                self._join(ready, self._free_rows())
            elif waiting is not None:
                self._waiting[waiting.request.key].popleft()
                self._prefilling = waiting
            else:
                return

    def _priority(self, unit: _Unit) -> tuple[int, int]:
        return self._running(unit.request.key), unit.order

    def _make_room_for_starving_keys(self) -> None:
        """A key with work waiting and no row running takes a row from the key with the most, when
        that key has more than its share of the batch: one organization's many requests must not
        keep another's one waiting until they finish."""
        if self._free_rows() > 0:
            return
        demand = {row.request.key for row in self._rows}
        starving = {unit.request.key for unit in self._ready}
        starving |= {key for key, units in self._waiting.items() if units}
        starving -= demand
        if self._prefilling is not None:
            starving.discard(self._prefilling.request.key)
        if not starving or not self._rows:
            return
        share = -(-self._max_rows // len(demand | starving))
        busiest = max(demand, key=self._running)
        if self._running(busiest) <= share:
            return
        victim = max(i for i, row in enumerate(self._rows) if row.request.key == busiest)  # the newest
        row = self._rows[victim]
        self._keep_rows([i for i in range(len(self._rows)) if i != victim])
        tokens = row.request.prompt_ids + row.decoding.tokens
        self._waiting.setdefault(busiest, deque()).appendleft(_Unit(row.request, tokens, [row], next(self._order)))
        self._counters.preempted += 1

    def _join(self, unit: _Unit, room: int) -> None:
        """Rows of a prefilled unit choose their first token; those still going enter the batch."""
        assert unit.cache is not None and unit.logits is not None
        joining, unit.rows = unit.rows[:room], unit.rows[room:]
        staying = []
        for row in joining:
            self._emit(row, row.decoding.advance(unit.logits))
            if not row.decoding.finished:
                staying.append(row)
        if staying:
            self._batch.add(unit.cache, len(unit.tokens), len(staying))
            self._rows += staying
        if unit.rows:
            if unit not in self._ready:
                self._ready.append(unit)
        elif unit in self._ready:
            self._ready.remove(unit)

    # Model passes --------------------------------------------------------------------------------

    @torch.inference_mode()
    def _prefill(self) -> None:
        """Prefill up to a chunk of prompt tokens between two decode steps: of the current unit,
        then of the next ones admitted (short prompts arriving together join in one step); with
        nothing decoding, until no unit is left, as no one waits then."""
        budget = self._chunk
        while self._prefilling is not None and (budget > 0 or not self._rows):
            unit = self._prefilling
            chunk = unit.tokens[unit.done : unit.done + (budget if budget > 0 else self._chunk)]
            ids = torch.tensor([chunk], device=self.device)
            positions = torch.arange(unit.done, unit.done + len(chunk), device=self.device).unsqueeze(0)
            if unit.cache is None:
                unit.cache = DynamicCache()
            adapter = [self._adapter_of(unit.request)]
            out = self._forward(adapter, input_ids=ids, position_ids=positions, cache=unit.cache)
            unit.done += len(chunk)
            budget -= len(chunk)
            self._counters.prefilled_tokens += len(chunk)
            if unit.done == len(unit.tokens):
                unit.logits = out[0].float()
                self._prefilling = None
                self._join(unit, self._free_rows())
                self._admit()

    @torch.inference_mode()
    def _decode(self) -> None:
        tokens = [row.decoding.pending for row in self._rows]
        ids = torch.tensor([[token] for token in tokens], device=self.device)
        mask, positions = self._batch.step_inputs()
        assert self._batch.cache is not None
        adapters = [self._adapter_of(row.request) for row in self._rows]
        logits = self._forward(adapters, input_ids=ids, position_ids=positions, cache=self._batch.cache, mask=mask)
        self._batch.stepped(mask)
        self._counters.steps += 1
        logits = logits.float()
        for i, row in enumerate(self._rows):
            self._emit(row, row.decoding.advance(logits[i]))
        if any(row.decoding.finished for row in self._rows):
            self._keep_rows([i for i, row in enumerate(self._rows) if not row.decoding.finished])

    def _forward(
        self,
        adapters: list[int],
        *,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        cache: DynamicCache,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits for each row's next token; extends `cache` by the inputs."""
        arguments: dict[str, Any] = {
            "input_ids": input_ids,
            "position_ids": position_ids,
            "attention_mask": mask,
            "past_key_values": cache,
            "use_cache": True,
            "logits_to_keep": 1,  # a long prompt's (tokens x vocab) logits would be large and unused
        }
        self._lora.use(adapters)
        out = self._base(**arguments)
        return out.logits[:, -1]

    def _adapter_of(self, request: Request) -> int:
        return self._adapters[request.adapter[0]].slot if request.adapter is not None else BASE_SLOT

    def _keep_rows(self, keep: list[int]) -> None:
        self._batch.keep(keep)
        self._rows = [self._rows[i] for i in keep]

    # Events --------------------------------------------------------------------------------------

    def _emit(self, row: _Row, deltas: list[Delta]) -> None:
        request = row.request
        for delta in deltas:
            request.on_event(delta)
        if row.decoding.finished:
            request.unfinished -= 1
            if not request.unfinished:
                self._release(request)

    def _abort(self, request: Request, error: BaseException) -> None:
        """End a request with an error; its other rows and units are dropped at the next step."""
        request.cancelled = True  # so that _drop_cancelled removes what is left of it
        if request.unfinished:
            request.unfinished = 0
            self._release(request)
            request.on_event(error)

    def _publish(self) -> None:
        by_key: dict[str, int] = {}
        for row in self._rows:
            by_key[row.request.key] = by_key.get(row.request.key, 0) + 1
        waiting = sum(len(units) for units in self._waiting.values()) + len(self._ready)
        waiting += 1 if self._prefilling is not None else 0
        counters = self._counters
        with self._lock:
            self._snapshot = ServerStats(
                running=len(self._rows),
                waiting=waiting,
                requests=self._requests,
                running_by_key=by_key,
                loaded_adapters=list(self._adapters),
                steps=counters.steps,
                prefilled_tokens=counters.prefilled_tokens,
                preempted=counters.preempted,
                cancelled=counters.cancelled,
            )

    # Adapters ------------------------------------------------------------------------------------

    def _acquire(self, adapter: AdapterRef) -> str:
        """Pin an adapter for a request, loading it first if needed."""
        name, path = adapter
        loaded = self._adapters.get(name)
        if loaded is None:
            loaded = self._load(name, Path(path))
        loaded.users += 1
        loaded.doomed = False  # wanted again
        self._adapters.move_to_end(name)
        self._evict_idle()
        return name

    def _release(self, request: Request) -> None:
        with self._lock:
            self._requests -= 1
        if not request.pinned:
            return
        request.pinned = False
        assert request.adapter is not None
        name = request.adapter[0]
        loaded = self._adapters[name]
        loaded.users -= 1
        if loaded.doomed and not loaded.users:
            self._delete(name)
        self._evict_idle()

    def _load(self, name: str, path: Path) -> _LoadedAdapter:
        started = time.perf_counter()
        loaded = self._adapters[name] = _LoadedAdapter(path, self._lora.load(path))
        logger.info("loaded adapter %s from %s in %.2f s", name, path, time.perf_counter() - started)
        return loaded

    def _unload(self, name: str) -> None:
        loaded = self._adapters.get(name)
        if loaded is None:
            return
        if loaded.users:
            loaded.doomed = True
        else:
            self._delete(name)

    def _evict_idle(self) -> None:
        excess = len(self._adapters) - self._max_adapters
        for name in [n for n, a in self._adapters.items() if not a.users][: max(excess, 0)]:
            self._delete(name)

    def _delete(self, name: str) -> None:
        self._lora.unload(self._adapters.pop(name).slot)
        logger.info("unloaded adapter %s", name)


SKINNY_ROWS = 32  # up to this many rows, a CPU multiplies weight-major (measured in docs/serving.md)


def _weight_major_linears(model: torch.nn.Module) -> None:
    """Make the model's linear layers compute `(W @ x.T).T` for a few rows (a decode step's batch).

    With 2 to 32 rows, the CPU's `linear` (x @ W.T) is slow for weights that don't fit in cache:
    on SmolLM2's 49152 x 576 output layer, 20 ms for 8 rows against 9 ms weight-major; the whole
    model decodes a third faster at 4 rows. One row and long prompts keep `linear`.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.forward = types.MethodType(_skinny_linear, module)  # type: ignore[method-assign]


def _skinny_linear(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    rows = x.numel() // x.shape[-1]
    if not 1 < rows <= SKINNY_ROWS:
        return torch.nn.functional.linear(x, self.weight, self.bias)
    out = (self.weight @ x.reshape(rows, -1).t()).t()
    if self.bias is not None:
        out = out + self.bias
    return out.reshape(*x.shape[:-1], out.shape[-1])


def _iterate(request: Request, events: queue.SimpleQueue[Event]) -> Iterator[Delta]:
    unfinished = request.params.n  # counted here: the scheduler's count may run ahead of the queue
    try:
        while unfinished:
            event = events.get()
            if isinstance(event, BaseException):
                raise event
            yield event
            if event.finish_reason is not None:
                unfinished -= 1
    finally:
        request.cancel()  # a no-op once it has finished

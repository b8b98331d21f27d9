"""Text generation from one base model, with its LoRA adapters switched per request.

`ModelServer` keeps the base model in memory once and applies a PEFT LoRA adapter per request
(loaded on first use, kept in an LRU). Decoding is our own loop over the KV cache, which gives
exact control over penalties, stop strings, logprobs and streaming.

Thread safety: any number of threads may call `generate`/`stream` at once. One lock, handed
out first come first served, serializes the model's forward passes a few at a time, and each
holder first switches the LoRA layers to its own request's adapter, so concurrent requests
interleave and never mix adapters. A holder normally runs one step; when it had to switch
adapters (PEFT needs tens of ms for that) it runs for 10x the switch's duration, so requests
for different adapters don't pay a switch per token. The lock is never held while a stream
waits for its consumer. Adapters that a running request uses are pinned: the LRU evicts only
idle ones, and so may hold more than `max_loaded_adapters` while more distinct adapters than
that are generating at once.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTuner
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from openft.engine.data import render_completion_prompt, render_prompt

logger = logging.getLogger(__name__)

FinishReason = Literal["stop", "length"]
AdapterRef = tuple[str, Path]  # (name, PEFT adapter dir); the name identifies the weights
MAX_STOP_STRINGS = 4
MAX_TOP_LOGPROBS = 20
# A request that had to switch the LoRA layers decodes for this many times the switch's
# duration before it lets another request in (so switching costs at most about 10%).
SWITCH_AMORTIZATION = 10


class PromptTooLong(ValueError):
    """The prompt leaves no room for a single completion token."""

    def __init__(self, prompt_tokens: int, context_length: int) -> None:
        super().__init__(
            f"the prompt has {prompt_tokens} tokens, but this model's context length is "
            f"{context_length} tokens, prompt and completion together"
        )
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


@dataclass
class GenerationParams:
    max_new_tokens: int | None = None  # None: until the context length
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    n: int = 1
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    # OpenAI semantics: subtracted from the logits of each token already generated in this
    # choice, presence once, frequency times its count.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ValueError("temperature must be a finite number >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.n < 1:
            raise ValueError("n must be at least 1")
        if len(self.stop) > MAX_STOP_STRINGS or not all(self.stop):
            raise ValueError(f"stop takes at most {MAX_STOP_STRINGS} non-empty strings")
        if not (math.isfinite(self.presence_penalty) and math.isfinite(self.frequency_penalty)):
            raise ValueError("penalties must be finite")
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}]")
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs")


@dataclass(frozen=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: list[int]  # the token's UTF-8 bytes; a token may hold part of a character


@dataclass(frozen=True)
class TokenLogprob:
    """Like OpenAI's ChatCompletionTokenLogprob. Log-probabilities are the model's own
    distribution, before penalties, temperature and top_p."""

    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TopLogprob]  # most likely first; empty unless top_logprobs > 0


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed choice: text that is final, and the logprobs of the tokens whose
    text starts in it. The last delta of each choice has `finish_reason` (it may carry text too)."""

    index: int  # the choice
    text: str
    logprobs: list[TokenLogprob] | None  # None unless requested
    finish_reason: FinishReason | None = None
    completion_tokens: int = 0  # tokens the choice generated; set on its last delta


@dataclass(frozen=True)
class Choice:
    index: int
    text: str
    finish_reason: FinishReason
    logprobs: list[TokenLogprob] | None


@dataclass(frozen=True)
class GenerationResult:
    choices: list[Choice]
    prompt_tokens: int
    completion_tokens: int  # summed over choices; eos and tokens cut with a stop string count


@dataclass
class _LoadedAdapter:
    path: Path
    peft_name: str  # the name inside PEFT (see _load)
    users: int = 0  # running requests; pinned while > 0
    doomed: bool = False  # unload requested while in use: delete when the last user is done


@dataclass
class _Decoding:
    """One choice being decoded."""

    index: int
    adapter: str | None
    params: GenerationParams
    generator: torch.Generator
    budget: int  # most tokens to generate
    logits: torch.Tensor  # for the next token
    cache: Any  # the model's KV cache
    detokenizer: _Detokenizer
    gate: _StopGate = field(init=False)
    counts: torch.Tensor | None = field(init=False)  # of each generated token, for penalties
    unreleased: list[TokenLogprob] = field(default_factory=list)  # tokens the detokenizer holds back
    n_tokens: int = 0
    finished: bool = False

    def __post_init__(self) -> None:
        self.gate = _StopGate(self.params.stop)
        penalized = self.params.presence_penalty or self.params.frequency_penalty
        self.counts = torch.zeros_like(self.logits) if penalized else None

    def delta(self, text: str, entries: list[TokenLogprob], finish: FinishReason | None = None) -> Delta:
        logprobs = entries if self.params.logprobs else None
        return Delta(self.index, text, logprobs, finish, self.n_tokens if finish else 0)


_STALE = object()  # the LoRA layers' state is unknown and must be set before the next step


class ModelServer:
    """Serves one base model and switches LoRA adapters per request without reloading it.

    See the module docstring for the threading model.
    """

    def __init__(self, base_model_dir: Path, device: str = "auto", max_loaded_adapters: int = 8) -> None:
        if max_loaded_adapters < 1:
            raise ValueError("max_loaded_adapters must be at least 1")
        started = time.perf_counter()
        self.device = _device(device)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self._tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(base_model_dir)
        base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=dtype, device_map=self.device)
        assert isinstance(base, PreTrainedModel)
        self._base = base.eval()
        self._peft: PeftModel | None = None  # wraps _base while any adapter is loaded
        self._adapters: OrderedDict[str, _LoadedAdapter] = OrderedDict()  # least recently used first
        self._loads = 0
        self._max_adapters = max_loaded_adapters
        self._applied: object = None  # adapter name the LoRA layers apply, None when disabled
        self._lock = _FifoLock()
        self._eos_ids = _eos_ids(self._base, self._tokenizer)
        self._context_length = _context_length(self._base)
        self._byte_decoder = _byte_decoder(self._tokenizer)
        self._token_info: dict[int, tuple[str, list[int]]] = {}
        logger.info(
            "loaded %s on %s (%s) in %.1f s",
            base_model_dir,
            self.device,
            dtype,
            time.perf_counter() - started,
        )

    @property
    def context_length(self) -> int:
        """Most tokens, prompt and completion together, a request can have."""
        return self._context_length

    @property
    def loaded_adapters(self) -> list[str]:
        """Names of the adapters in memory, least recently used first."""
        with self._lock:
            return list(self._adapters)

    def chat_prompt(self, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        """Token ids to generate the next assistant turn from, rendered as training does."""
        return render_prompt(self._tokenizer, messages)

    def completion_prompt(self, prompt: str) -> list[int]:
        """Token ids of a legacy completion prompt, rendered as training does."""
        return render_completion_prompt(self._tokenizer, prompt)

    def generate(
        self, prompt_ids: Sequence[int], params: GenerationParams, adapter: AdapterRef | None = None
    ) -> GenerationResult:
        """Generate `params.n` choices; blocking, meant to run in a worker thread."""
        texts: list[list[str]] = [[] for _ in range(params.n)]
        entries: list[list[TokenLogprob]] = [[] for _ in range(params.n)]
        choices: list[Choice] = []
        completion_tokens = 0
        for delta in self.stream(prompt_ids, params, adapter):
            i = delta.index
            texts[i].append(delta.text)
            entries[i].extend(delta.logprobs or [])
            if delta.finish_reason is not None:
                logprobs = entries[i] if params.logprobs else None
                choices.append(Choice(i, "".join(texts[i]), delta.finish_reason, logprobs))
                completion_tokens += delta.completion_tokens
        return GenerationResult(choices, len(prompt_ids), completion_tokens)

    def stream(
        self, prompt_ids: Sequence[int], params: GenerationParams, adapter: AdapterRef | None = None
    ) -> Iterator[Delta]:
        """Generate `params.n` choices one after the other, as deltas of final text.

        Bad prompts (PromptTooLong) and adapters that fail to load raise here, before the
        first delta, so that an API can still answer with an error status.
        """
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        if len(prompt_ids) >= self._context_length:
            raise PromptTooLong(len(prompt_ids), self._context_length)
        if adapter is not None:
            self._release(self._acquire(adapter))  # load now; the stream pins it when it starts
        return self._stream(list(prompt_ids), params, adapter)

    def unload_adapter(self, name: str) -> None:
        """Free an adapter (its model was deleted); requests using it now finish first."""
        with self._lock:
            loaded = self._adapters.get(name)
            if loaded is None:
                return
            if loaded.users:
                loaded.doomed = True
            else:
                self._delete(name)

    def _stream(self, prompt_ids: list[int], params: GenerationParams, adapter: AdapterRef | None) -> Iterator[Delta]:
        name = self._acquire(adapter) if adapter is not None else None
        try:
            budget = self._context_length - len(prompt_ids)
            if params.max_new_tokens is not None:
                budget = min(budget, params.max_new_tokens)
            generator = torch.Generator()
            if params.seed is None:
                generator.seed()
            else:
                generator.manual_seed(params.seed % 2**64)
            # The prompt is computed once; every choice continues from its own copy of the cache.
            with self._lock:
                self._apply(name)
                logits, cache = self._forward(prompt_ids, None)
            for index in range(params.n):
                last = index == params.n - 1
                choice_cache = cache if last else _copy_cache(cache)
                detokenizer = _Detokenizer(self._tokenizer)
                state = _Decoding(index, name, params, generator, budget, logits, choice_cache, detokenizer)
                while not state.finished:
                    with self._lock:
                        deltas = self._slice(state)
                    yield from deltas  # never with the lock held: the consumer may be slow
        finally:
            if name is not None:
                self._release(name)

    def _slice(self, state: _Decoding) -> list[Delta]:
        """Decode steps for one hold of the lock: one step, or, when the LoRA layers had to be
        switched to this request's adapter (PEFT takes tens of ms), enough steps to make that
        cost small beside them, so that requests for different adapters don't switch every step."""
        started = time.perf_counter()
        self._apply(state.adapter)
        until = started + SWITCH_AMORTIZATION * (time.perf_counter() - started)
        deltas = self._step(state)
        while not state.finished and time.perf_counter() < until:
            deltas += self._step(state)
        return deltas

    def _step(self, state: _Decoding) -> list[Delta]:
        """Choose one token, run the model on it, and return the text it made final."""
        params = state.params
        token, entry = self._choose(state.logits, state.counts, params, state.generator)
        state.n_tokens += 1
        if token in self._eos_ids:
            return [self._finish(state, "stop")]
        if entry is not None:
            state.unreleased.append(entry)
        deltas: list[Delta] = []
        if piece := state.detokenizer.push(token):
            text, entries, stopped = state.gate.push(piece, state.unreleased)
            state.unreleased = []
            if stopped:
                state.finished = True
                return [state.delta(text, entries, "stop")]
            if text or entries:
                deltas.append(state.delta(text, entries))
        if state.n_tokens == state.budget:
            return [*deltas, self._finish(state, "length")]
        state.logits, state.cache = self._forward([token], state.cache)
        return deltas

    def _finish(self, state: _Decoding, reason: FinishReason) -> Delta:
        # Whatever is still held back is final now: an incomplete character, or text that
        # could have begun a stop string (a stop string completed by it is caught here).
        state.finished = True
        text, entries, stopped = state.gate.push(state.detokenizer.flush(), state.unreleased)
        if stopped:
            return state.delta(text, entries, "stop")
        more_text, more_entries = state.gate.flush()
        return state.delta(text + more_text, entries + more_entries, reason)

    @torch.inference_mode()
    def _forward(self, input_ids: list[int], cache: Any) -> tuple[torch.Tensor, Any]:
        """Logits for the token after `input_ids` (float32), and the cache that now includes them.
        Only with the lock held and the request's adapter applied."""
        ids = torch.tensor([input_ids], device=self.device)
        model = self._peft if self._peft is not None else self._base
        # logits_to_keep=1: a long prompt's (tokens x vocab) logits would be large and unused.
        out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out.logits[0, -1].float(), out.past_key_values

    @torch.inference_mode()
    def _choose(
        self,
        logits: torch.Tensor,
        counts: torch.Tensor | None,
        params: GenerationParams,
        generator: torch.Generator,
    ) -> tuple[int, TokenLogprob | None]:
        """Pick the next token (updating `counts`), with its logprob entry when asked for."""
        scores = logits
        if counts is not None:
            scores = scores - params.frequency_penalty * counts - params.presence_penalty * (counts > 0)
        if params.temperature == 0:
            token = int(scores.argmax())
        else:
            token = _sample(torch.softmax(scores / params.temperature, dim=-1), params.top_p, generator)
        if counts is not None:
            counts[token] += 1
        entry = self._logprob_entry(logits, token, params.top_logprobs) if params.logprobs else None
        return token, entry

    def _logprob_entry(self, logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
        logprobs = torch.log_softmax(logits, dim=-1)
        tops: list[TopLogprob] = []
        if top:
            values, ids = logprobs.topk(top)
            for value, top_id in zip(values.tolist(), ids.tolist(), strict=True):
                top_text, top_raw = self._token_text(top_id)
                tops.append(TopLogprob(top_text, value, top_raw))
        text, raw = self._token_text(token)
        return TokenLogprob(text, float(logprobs[token]), raw, tops)

    def _token_text(self, token: int) -> tuple[str, list[int]]:
        """(text, bytes) of a token as logprobs show it; cached, as top_logprobs ask for many."""
        if token not in self._token_info:
            raw = _token_bytes(self._tokenizer, self._byte_decoder, token)
            self._token_info[token] = (raw.decode("utf-8", errors="replace"), list(raw))
        return self._token_info[token]

    # Adapters. Everything below runs with the lock held, except _acquire and _release themselves.

    def _acquire(self, adapter: AdapterRef) -> str:
        """Pin an adapter for a request, loading it first if needed."""
        name, path = adapter
        with self._lock:
            loaded = self._adapters.get(name)
            if loaded is None:
                loaded = self._load(name, Path(path))
            loaded.users += 1
            loaded.doomed = False  # wanted again
            self._adapters.move_to_end(name)
            self._evict_idle()
            return name

    def _release(self, name: str) -> None:
        with self._lock:
            loaded = self._adapters[name]
            loaded.users -= 1
            if loaded.doomed and not loaded.users:
                self._delete(name)
            self._evict_idle()

    def _load(self, name: str, path: Path) -> _LoadedAdapter:
        started = time.perf_counter()
        # PEFT names become module names, which can't hold "." (think "ft:model-1.5b:..."), and
        # it warns about names inside "lora_"; equal-length names are never inside each other either.
        self._loads += 1
        peft_name = f"adapter{self._loads:08d}"
        self._applied = _STALE  # loading may change which adapter is active
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self._base, path, adapter_name=peft_name)
        else:
            try:
                self._peft.load_adapter(path, adapter_name=peft_name)
            except Exception:
                # Leave no half-loaded adapter behind to break later requests.
                if peft_name in self._peft.peft_config:
                    self._peft.delete_adapter(peft_name)
                raise
        loaded = self._adapters[name] = _LoadedAdapter(path, peft_name)
        logger.info("loaded adapter %s from %s in %.2f s", name, path, time.perf_counter() - started)
        return loaded

    def _evict_idle(self) -> None:
        # New adapters load before old ones go, so PEFT always has one while wrapped.
        excess = len(self._adapters) - self._max_adapters
        for name in [n for n, a in self._adapters.items() if not a.users][: max(excess, 0)]:
            self._delete(name)

    def _delete(self, name: str) -> None:
        assert self._peft is not None
        peft_name = self._adapters.pop(name).peft_name
        if self._adapters:
            # Activate a survivor first, or PEFT warns that it picks one itself.
            self._peft.set_adapter(next(iter(self._adapters.values())).peft_name, inference_mode=True)
        self._peft.delete_adapter(peft_name)
        if not self._adapters:
            # A PeftModel without adapters can't run forward; unwrap to the plain base model.
            self._base = self._peft.unload()
            self._peft = None
        self._applied = None if self._peft is None else _STALE
        logger.info("unloaded adapter %s", name)

    def _apply(self, adapter: str | None) -> None:
        """Make the LoRA layers apply `adapter` (None: the base model alone)."""
        if self._peft is None or self._applied == adapter:
            return
        lora = self._peft.base_model
        assert isinstance(lora, BaseTuner)
        if adapter is None:
            lora.disable_adapter_layers()  # what PeftModel.disable_adapter() does, left on
        else:
            lora.enable_adapter_layers()
            self._peft.set_adapter(self._adapters[adapter].peft_name, inference_mode=True)
        self._applied = adapter


class _FifoLock:
    """A lock taken in the order it was asked for. A plain Lock mostly goes straight back to
    the thread that released it, so one stream would run to its end while the others wait."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: deque[threading.Lock] = deque()

    def __enter__(self) -> None:
        with self._mutex:
            if not self._held:
                self._held = True
                return
            turn = threading.Lock()
            turn.acquire()
            self._waiters.append(turn)
        turn.acquire()  # released by __exit__ of the holder, which hands the lock over to us

    def __exit__(self, *_: object) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._held = False


class _Detokenizer:
    """Turns token ids, one at a time, into text that later tokens can't change.

    Decodes a short window of recent tokens rather than everything so far (which would be
    quadratic), and keeps the window's first tokens as context because tokenizers like
    SentencePiece decode a token differently at the start of a text. Text ending in an
    incomplete UTF-8 sequence (decoded as U+FFFD) waits for the tokens that complete it.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # the window starts here
        self._read = 0  # text up to here has been returned

    def push(self, token: int) -> str:
        self._ids.append(token)
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        if len(text) > len(prefix_text) and not text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """The rest, complete or not."""
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return text[len(prefix_text) :]

    def _decode(self, ids: list[int]) -> str:
        # No clean-up of spaces: it could rewrite text already returned.
        text = self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        assert isinstance(text, str)
        return text


class _StopGate:
    """Passes text on unless it could be the start of a stop string; finds stop strings that
    span several tokens. Logprob entries travel with the text where their token's text starts."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = list(stops)
        self._held = ""
        self._entries: list[tuple[int, TokenLogprob]] = []  # (offset in _held, entry)

    def push(self, text: str, entries: Sequence[TokenLogprob]) -> tuple[str, list[TokenLogprob], bool]:
        """(text now final, its entries, whether a stop string ended the choice)."""
        self._entries += [(len(self._held), e) for e in entries]
        self._held += text
        hits = [i for i in (self._held.find(s) for s in self._stops) if i >= 0]
        if hits:
            return (*self._take(min(hits)), True)
        return (*self._take(self._safe_length()), False)

    def flush(self) -> tuple[str, list[TokenLogprob]]:
        return self._take(len(self._held))

    def _safe_length(self) -> int:
        """Length of the held text's longest prefix after which no stop string can begin."""
        longest = max((len(s) for s in self._stops), default=0)
        for start in range(max(len(self._held) - longest + 1, 0), len(self._held)):
            tail = self._held[start:]
            if any(s.startswith(tail) for s in self._stops):
                return start
        return len(self._held)

    def _take(self, n: int) -> tuple[str, list[TokenLogprob]]:
        text = self._held[:n]
        everything = n == len(self._held)  # includes entries of tokens with no text at the end
        taken = [e for offset, e in self._entries if offset < n or everything]
        self._entries = [(offset - n, e) for offset, e in self._entries if not (offset < n or everything)]
        self._held = self._held[n:]
        return text, taken


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _sample(probs: torch.Tensor, top_p: float, generator: torch.Generator) -> int:
    """Draw a token by inverting the cumulative distribution at one uniform number.

    The number comes from a CPU generator, so a seed means the same on every device, and
    only that scalar crosses to the device.
    """
    order = None
    if top_p < 1:
        probs, order = probs.sort(descending=True)
        # Keep the smallest head whose mass reaches top_p (at least the top token).
        probs = probs * (probs.cumsum(dim=-1) - probs < top_p)
    cdf = probs.cumsum(dim=-1)
    u = torch.rand(1, generator=generator).to(cdf.device) * cdf[-1]
    # The first index whose cdf exceeds u: never a token of probability 0.
    i = int(torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.numel() - 1))
    return i if order is None else int(order[i])


@torch.inference_mode()
def _copy_cache(cache: Any) -> Any:
    return copy.deepcopy(cache)


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """Every token that ends a completion: the generation config's (maybe several) and the tokenizer's."""
    ids: set[int] = set()
    configured = model.generation_config.eos_token_id if model.generation_config else None
    for value in (configured, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(value)
    if not ids:
        raise ValueError("the model has no eos token")
    return frozenset(ids)


def _context_length(model: PreTrainedModel) -> int:
    config = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError("can't tell the model's context length from its config")


def _byte_decoder(tokenizer: PreTrainedTokenizerBase) -> dict[str, int] | None:
    """For byte-level BPE tokenizers (GPT-2, Llama 3, Qwen, SmolLM), the inverse of the
    bytes -> printable characters map their vocabularies are written in; otherwise None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or '"ByteLevel"' not in json.dumps(json.loads(backend.to_str()).get("decoder")):
        return None
    # GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others, in order,
    # for the characters from U+0100 on.
    printable = {
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    }
    others = [b for b in range(256) if b not in printable]
    decoder = {chr(b): b for b in printable}
    decoder.update({chr(256 + i): b for i, b in enumerate(others)})
    return decoder


def _token_bytes(tokenizer: PreTrainedTokenizerBase, byte_decoder: dict[str, int] | None, token: int) -> bytes:
    """The bytes a token stands for, even when they are only part of a UTF-8 character."""
    piece = tokenizer.convert_ids_to_tokens(token)
    assert isinstance(piece, str)
    if byte_decoder is not None and all(c in byte_decoder for c in piece):
        return bytes(byte_decoder[c] for c in piece)
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):  # SentencePiece byte fallback
        return bytes([int(piece[3:5], 16)])
    text = tokenizer.decode([token], clean_up_tokenization_spaces=False)
    assert isinstance(text, str)
    return text.encode("utf-8")

"""What one generated choice is: its parameters, its token choice, its text and logprobs.

Everything here is about a single sequence and knows nothing of batches, adapters or threads:
`Decoding` turns the logits of one row of a forward pass into the next token and the text that
token made final (held back while it could still begin a stop string or complete a character).
`openft.engine.serving` runs many `Decoding`s through one model at once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

FinishReason = Literal["stop", "length"]
MAX_STOP_STRINGS = 4
MAX_TOP_LOGPROBS = 20


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


class TokenTexts:
    """(text, bytes) of tokens as logprobs show them; cached, as top_logprobs ask for many."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self._byte_decoder = _byte_decoder(tokenizer)
        self._cache: dict[int, tuple[str, list[int]]] = {}

    def __call__(self, token: int) -> tuple[str, list[int]]:
        if token not in self._cache:
            raw = _token_bytes(self.tokenizer, self._byte_decoder, token)
            self._cache[token] = (raw.decode("utf-8", errors="replace"), list(raw))
        return self._cache[token]


class Decoding:
    """One choice being generated: call `advance` with the logits for its next token.

    `pending` is then the token to feed the model next (None once `finished`), and `tokens` every
    token chosen so far, so that a scheduler can recompute the choice's cache from its prompt.
    """

    def __init__(
        self,
        index: int,
        params: GenerationParams,
        budget: int,
        texts: TokenTexts,
        eos_ids: frozenset[int],
        generator: torch.Generator,
    ) -> None:
        self.index = index
        self.params = params
        self.budget = budget  # most tokens to generate
        self.tokens: list[int] = []
        self.pending: int | None = None
        self.finished = False
        self._texts = texts
        self._eos_ids = eos_ids
        self._generator = generator
        self._detokenizer = _Detokenizer(texts.tokenizer)
        self._gate = _StopGate(params.stop)
        self._counts: torch.Tensor | None = None  # of each generated token, for penalties
        self._unreleased: list[TokenLogprob] = []  # entries of tokens the detokenizer holds back

    @torch.inference_mode()
    def advance(self, logits: torch.Tensor) -> list[Delta]:
        """Choose the next token from `logits` (float32, one row) and return the deltas it made;
        the first call always returns one, so a consumer learns at once that the choice began."""
        first = not self.tokens
        token, entry = self._choose(logits)
        self.tokens.append(token)
        self.pending = None
        if token in self._eos_ids:
            return [self._finish("stop")]
        if entry is not None:
            self._unreleased.append(entry)
        deltas: list[Delta] = []
        if piece := self._detokenizer.push(token):
            text, entries, stopped = self._gate.push(piece, self._unreleased)
            self._unreleased = []
            if stopped:
                self.finished = True
                return [self._delta(text, entries, "stop")]
            if text or entries:
                deltas.append(self._delta(text, entries))
        if len(self.tokens) == self.budget:
            return [*deltas, self._finish("length")]
        self.pending = token
        return deltas or ([self._delta("", [])] if first else [])

    def _choose(self, logits: torch.Tensor) -> tuple[int, TokenLogprob | None]:
        params = self.params
        scores = logits
        if params.presence_penalty or params.frequency_penalty:
            if self._counts is None:
                self._counts = torch.zeros_like(logits)
            counts = self._counts
            scores = scores - params.frequency_penalty * counts - params.presence_penalty * (counts > 0)
        if params.temperature == 0:
            token = int(scores.argmax())
        else:
            token = _sample(torch.softmax(scores / params.temperature, dim=-1), params.top_p, self._generator)
        if self._counts is not None:
            self._counts[token] += 1
        entry = self._logprob_entry(logits, token) if params.logprobs else None
        return token, entry

    def _logprob_entry(self, logits: torch.Tensor, token: int) -> TokenLogprob:
        logprobs = torch.log_softmax(logits, dim=-1)
        tops: list[TopLogprob] = []
        if self.params.top_logprobs:
            values, ids = logprobs.topk(self.params.top_logprobs)
            for value, top_id in zip(values.tolist(), ids.tolist(), strict=True):
                top_text, top_raw = self._texts(top_id)
                tops.append(TopLogprob(top_text, value, top_raw))
        text, raw = self._texts(token)
        return TokenLogprob(text, float(logprobs[token]), raw, tops)

    def _finish(self, reason: FinishReason) -> Delta:
        # Whatever is still held back is final now: an incomplete character, or text that
        # could have begun a stop string (a stop string completed by it is caught here).
        self.finished = True
        self.pending = None
        text, entries, stopped = self._gate.push(self._detokenizer.flush(), self._unreleased)
        if stopped:
            return self._delta(text, entries, "stop")
        more_text, more_entries = self._gate.flush()
        return self._delta(text + more_text, entries + more_entries, reason)

    def _delta(self, text: str, entries: list[TokenLogprob], finish: FinishReason | None = None) -> Delta:
        logprobs = entries if self.params.logprobs else None
        return Delta(self.index, text, logprobs, finish, len(self.tokens) if finish else 0)


def choice_generator(seed: int | None, index: int) -> torch.Generator:
    """The random stream of one choice: seeded choices repeat whatever else runs beside them."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed((seed + index * 0x9E3779B97F4A7C15) % 2**64)
    return generator


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


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """Every token that ends a completion: the generation config's (maybe several) and the tokenizer's."""
    return eos_token_ids(model.generation_config, tokenizer)


def eos_token_ids(generation_config: GenerationConfig | None, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """What `_eos_ids` reads off a model, from its generation config (exports write the same set)."""
    ids: set[int] = set()
    configured = generation_config.eos_token_id if generation_config else None
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

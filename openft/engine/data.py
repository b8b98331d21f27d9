"""Examples -> token ids with loss labels, and length-grouped batches.

Two example formats are accepted:

* chat: `{"messages": [{"role": ..., "content": ...}, ...]}`, rendered with the tokenizer's
  chat template. Every assistant message is trained on (its content and end-of-turn token)
  unless it has `"weight": 0`. An assistant message with `tool_calls` gets the JSON list
  `[{"name": ..., "arguments": ...}, ...]` as its content (after any text content and a newline).
* legacy completion: `{"prompt": str, "completion": str}`, no chat template; the completion
  and a trailing eos are trained on.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
# Length grouping sorts inside windows of this many batches: big enough to find similar
# lengths, small enough that batch composition still changes from epoch to epoch.
GROUP_WINDOW_BATCHES = 64


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # aligned with input_ids; IGNORE_INDEX where no loss is taken
    truncated: bool

    @property
    def n_labeled(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def tokenize_example(
    tokenizer: PreTrainedTokenizerBase, example: Mapping[str, Any], max_seq_len: int
) -> TokenizedExample:
    """Tokenize one training example; anything past `max_seq_len` tokens is dropped."""
    if "messages" in example:
        ids, labels = _tokenize_chat(tokenizer, example["messages"])
    elif "prompt" in example and "completion" in example:
        ids, labels = _tokenize_completion(tokenizer, example["prompt"], example["completion"])
    else:
        raise ValueError("example needs 'messages', or 'prompt' and 'completion'")
    return TokenizedExample(ids[:max_seq_len], labels[:max_seq_len], len(ids) > max_seq_len)


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, Any]]) -> list[int]:
    """Token ids to generate the next assistant turn from, exactly as training renders them."""
    return _encode_chat(tokenizer, _template_messages(tokenizer, messages), generation_prompt=True)


def render_completion_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids of a legacy completion prompt, exactly as training renders them."""
    return list(tokenizer.encode(prompt, add_special_tokens=True))


def _tokenize_completion(
    tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str
) -> tuple[list[int], list[int]]:
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no eos token to end completions with")
    prompt_ids = render_completion_prompt(tokenizer, prompt)
    completion_ids = [*tokenizer.encode(completion, add_special_tokens=False), tokenizer.eos_token_id]
    return prompt_ids + completion_ids, [IGNORE_INDEX] * len(prompt_ids) + completion_ids


def _tokenize_chat(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, Any]]
) -> tuple[list[int], list[int]]:
    rendered = _template_messages(tokenizer, messages)
    ids = _encode_chat(tokenizer, rendered, generation_prompt=False)
    labels = [IGNORE_INDEX] * len(ids)
    special = set(tokenizer.all_special_ids)
    for i, message in enumerate(messages):
        if message.get("role") != "assistant" or message.get("weight", 1) == 0:
            continue
        # The turn is what rendering messages[:i+1] adds to the generation prompt for turn i.
        # Common prefixes rather than lengths keep this right if a BPE merge crosses a boundary.
        # (Templates refuse to render an empty conversation: a leading assistant turn starts at 0.)
        prompt = _encode_chat(tokenizer, rendered[:i], generation_prompt=True) if i else []
        start = _common_prefix(prompt, ids)
        end = _common_prefix(_encode_chat(tokenizer, rendered[: i + 1], generation_prompt=False), ids)
        # Stop after the end-of-turn token: what templates put after it (a newline) is
        # formatting the model never generates.
        closers = [j for j in range(start, end) if ids[j] in special]
        if closers:
            end = closers[-1] + 1
        labels[start:end] = ids[start:end]
    return ids, labels


def _template_messages(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, Any]]
) -> list[dict[str, str]]:
    # Templates that don't know the developer role would render it as an unknown turn.
    knows_developer = "developer" in str(tokenizer.chat_template or "")
    out = []
    for message in messages:
        role = str(message["role"])
        if role == "developer" and not knows_developer:
            role = "system"
        out.append({"role": role, "content": _content_text(message)})
    return out


def _content_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        if any(part.get("type") != "text" for part in content):
            raise ValueError("only text content parts are supported")
        content = "".join(part["text"] for part in content)
    parts = [content] if content else []
    if message.get("tool_calls"):
        calls = [call["function"] for call in message["tool_calls"]]
        parts.append(json.dumps([{"name": c["name"], "arguments": c["arguments"]} for c in calls]))
    return "\n".join(parts)


def _encode_chat(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], generation_prompt: bool
) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    assert isinstance(text, str)
    # The template already wrote any bos/special tokens into the text.
    return list(tokenizer.encode(text, add_special_tokens=False))


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Example indices of every batch of one epoch, in training order.

    The order depends only on (seed, epoch), so a resumed run can skip the batches it
    already did. Shuffle, sort by length inside windows so batches pad little, then
    shuffle the batches so lengths don't trend through the epoch.
    """
    rng = random.Random(f"openft:{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = GROUP_WINDOW_BATCHES * batch_size
    batches: list[list[int]] = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window], key=lambda i: lengths[i])
        batches += [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # (batch, width), right-padded
    attention_mask: torch.Tensor
    labels: torch.Tensor
    n_tokens: int  # non-pad tokens

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.labels.to(device),
            self.n_tokens,
        )


def collate(examples: Sequence[TokenizedExample], pad_id: int) -> Batch:
    """Right-pad to the longest example of the batch."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        attention_mask[row, :n] = 1
    return Batch(input_ids, attention_mask, labels, int(attention_mask.sum()))

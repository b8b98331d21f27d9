from __future__ import annotations

import json
import random
from typing import Any

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from openft.engine import TokenizedExample, render_completion_prompt, render_prompt, tokenize_example
from openft.engine.data import IGNORE_INDEX, collate, epoch_batches

END = "<|im_end|>"


def labeled_spans(tokenizer: PreTrainedTokenizerBase, example: TokenizedExample) -> list[str]:
    """The text of each run of consecutive labeled tokens."""
    spans: list[list[int]] = []
    previous = IGNORE_INDEX
    for token, label in zip(example.input_ids, example.labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            if previous == IGNORE_INDEX:
                spans.append([])
            spans[-1].append(token)
        previous = label
    return [tokenizer.decode(span) for span in spans]


def chat(*turns: tuple[str, Any], **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": role, "content": content, **extra} for role, content in turns]}


def test_labels_cover_each_assistant_turn_and_its_end_token(tokenizer: PreTrainedTokenizerBase) -> None:
    example = chat(
        ("system", "Be brief."),
        ("user", "Hi"),
        ("assistant", "Hello! How can I help?"),
        ("user", "What is 2+2?"),
        ("assistant", "4"),
    )
    tokenized = tokenize_example(tokenizer, example, 1024)

    assert labeled_spans(tokenizer, tokenized) == [f"Hello! How can I help?{END}", f"4{END}"]
    assert not tokenized.truncated
    text = tokenizer.decode(tokenized.input_ids)
    assert text == tokenizer.apply_chat_template(example["messages"], tokenize=False)


def test_default_system_prompt_is_not_trained(tokenizer: PreTrainedTokenizerBase) -> None:
    tokenized = tokenize_example(tokenizer, chat(("user", "Hi"), ("assistant", "Hey.")), 1024)

    assert "You are a helpful AI assistant" in tokenizer.decode(tokenized.input_ids)
    assert labeled_spans(tokenizer, tokenized) == [f"Hey.{END}"]


def test_weight_zero_turns_are_not_trained(tokenizer: PreTrainedTokenizerBase) -> None:
    example = chat(("user", "Hi"), ("assistant", "Bad answer."), ("user", "Again"), ("assistant", "Good."))
    example["messages"][1]["weight"] = 0
    example["messages"][3]["weight"] = 1

    assert labeled_spans(tokenizer, tokenize_example(tokenizer, example, 1024)) == [f"Good.{END}"]


def test_content_parts_are_joined(tokenizer: PreTrainedTokenizerBase) -> None:
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there."}]
    tokenized = tokenize_example(tokenizer, chat(("user", parts), ("assistant", parts)), 1024)

    assert "user\nHello there." in tokenizer.decode(tokenized.input_ids)
    assert labeled_spans(tokenizer, tokenized) == [f"Hello there.{END}"]


def test_tool_calls_are_trained_as_json_and_tool_results_are_not(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2}'}}
    example = {
        "messages": [
            {"role": "user", "content": "Add 2."},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "4"},
            {"role": "assistant", "content": "It is 4."},
        ]
    }
    tokenized = tokenize_example(tokenizer, example, 1024)

    tool_json = json.dumps([{"name": "add", "arguments": '{"a": 2}'}])
    assert labeled_spans(tokenizer, tokenized) == [f"{tool_json}{END}", f"It is 4.{END}"]
    assert "<|im_start|>tool\n4<|im_end|>" in tokenizer.decode(tokenized.input_ids)


def test_developer_becomes_system_for_templates_without_it(tokenizer: PreTrainedTokenizerBase) -> None:
    tokenized = tokenize_example(tokenizer, chat(("developer", "Be terse."), ("user", "Hi")), 1024)

    assert tokenizer.decode(tokenized.input_ids).startswith("<|im_start|>system\nBe terse.<|im_end|>")
    assert tokenized.labels == [IGNORE_INDEX] * len(tokenized.input_ids)


def test_render_prompt_is_the_training_prefix(tokenizer: PreTrainedTokenizerBase) -> None:
    example = chat(("system", "S"), ("user", "Hi"), ("assistant", "Hey."))
    tokenized = tokenize_example(tokenizer, example, 1024)
    prompt = render_prompt(tokenizer, example["messages"][:2])

    assert tokenized.input_ids[: len(prompt)] == prompt
    first_label = next(i for i, label in enumerate(tokenized.labels) if label != IGNORE_INDEX)
    assert first_label == len(prompt)
    assert tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")


def test_legacy_prompt_completion(tokenizer: PreTrainedTokenizerBase) -> None:
    tokenized = tokenize_example(tokenizer, {"prompt": "The sky is", "completion": " blue"}, 1024)
    prompt = render_completion_prompt(tokenizer, "The sky is")

    assert tokenized.input_ids[: len(prompt)] == prompt
    assert tokenizer.decode(tokenized.input_ids) == f"The sky is blue{tokenizer.eos_token}"
    assert labeled_spans(tokenizer, tokenized) == [f" blue{tokenizer.eos_token}"]
    assert tokenized.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)


def test_truncation_keeps_the_start(tokenizer: PreTrainedTokenizerBase) -> None:
    example = chat(("user", "Hi"), ("assistant", "word " * 50))
    full = tokenize_example(tokenizer, example, 4096)
    cut = tokenize_example(tokenizer, example, 40)

    assert not full.truncated and cut.truncated
    assert cut.input_ids == full.input_ids[:40]
    assert cut.labels == full.labels[:40]
    assert cut.n_labeled > 0


def test_unknown_format_is_rejected(tokenizer: PreTrainedTokenizerBase) -> None:
    with pytest.raises(ValueError):
        tokenize_example(tokenizer, {"text": "hello"}, 1024)


def test_epoch_batches_cover_every_example_once_deterministically() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(5, 500) for _ in range(203)]
    batches = epoch_batches(lengths, 4, seed=7, epoch=0)

    assert sorted(i for b in batches for i in b) == list(range(203))
    assert len(batches) == 51 and all(len(b) == 4 for b in batches if len(b) != 3)
    assert batches == epoch_batches(lengths, 4, seed=7, epoch=0)
    assert batches != epoch_batches(lengths, 4, seed=7, epoch=1)
    assert batches != epoch_batches(lengths, 4, seed=8, epoch=0)


def test_epoch_batches_group_similar_lengths() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(5, 500) for _ in range(512)]

    def padding(batches: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    order = list(range(512))
    rng.shuffle(order)
    unsorted = [order[i : i + 4] for i in range(0, 512, 4)]
    assert padding(epoch_batches(lengths, 4, seed=0, epoch=0)) < padding(unsorted) / 10


def test_collate_pads_to_the_batch_max() -> None:
    short = TokenizedExample([5, 6], [IGNORE_INDEX, 6], truncated=False)
    long = TokenizedExample([1, 2, 3, 4], [IGNORE_INDEX, IGNORE_INDEX, 3, 4], truncated=False)
    batch = collate([short, long], pad_id=0)

    assert batch.input_ids.tolist() == [[5, 6, 0, 0], [1, 2, 3, 4]]
    assert batch.attention_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch.labels.tolist() == [[-100, 6, -100, -100], [-100, -100, 3, 4]]
    assert batch.n_tokens == 6
    assert batch.input_ids.dtype == torch.long

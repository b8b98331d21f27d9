"""Generation with ModelServer: mostly on a tiny Llama with lively random weights, twice on SmolLM2."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import queue
import shutil
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from openft.engine.generate import (
    Delta,
    GenerationParams,
    PromptTooLong,
    TokenLogprob,
    _byte_decoder,
    _Detokenizer,
    _sample,
    _StopGate,
    _token_bytes,
)
from openft.engine.serving import ModelServer
from tests.conftest import wait_until

MESSAGES = [{"role": "user", "content": "Tell me about herons."}]
GREEDY = GenerationParams(max_new_tokens=16, temperature=0)


@pytest.fixture(scope="module")
def lively_dir(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with weights big enough to give peaked, context-dependent predictions
    (its own init gives nearly uniform ones, and greedy decoding repeats one token)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if weight.dim() == 2:
                std = 1.0 if "embed" in name else 1.5 / math.sqrt(weight.shape[1])
                weight.copy_(torch.randn(weight.shape, generator=generator) * std)
    out = tmp_path_factory.mktemp("models") / "lively"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(out)
    return out


def make_adapter(base_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter whose B matrices are random (PEFT starts them at zero), so it changes the model."""
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]),
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, weight in peft_model.named_parameters():
            if "lora_B" in name:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.5)
    peft_model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def adapters(lively_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Path]]:
    """Two adapters by key, named like the fine-tuned models they serve (dots and all)."""
    root = tmp_path_factory.mktemp("adapters")
    return {
        key: (f"ft:tiny-1.5:org::{key}", make_adapter(lively_dir, root / key, seed))
        for key, seed in (("a", 1), ("b", 2))
    }


@pytest.fixture(scope="module")
def server(lively_dir: Path) -> ModelServer:
    return ModelServer(lively_dir)


@pytest.fixture(scope="module")
def prompt(server: ModelServer) -> list[int]:
    return server.chat_prompt(MESSAGES)


@pytest.fixture(scope="module")
def solo(lively_dir: Path, adapters: dict[str, tuple[str, Path]], prompt: list[int]) -> dict[str | None, str]:
    """Greedy text of the base and of each adapter, each from a fresh server that only ever saw it."""
    texts: dict[str | None, str] = {None: ModelServer(lively_dir).generate(prompt, GREEDY).choices[0].text}
    for key, adapter in adapters.items():
        texts[key] = ModelServer(lively_dir).generate(prompt, GREEDY, adapter).choices[0].text
    return texts


def hf_greedy(model: Any, prompt: list[int], max_new_tokens: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=max_new_tokens)
    return [int(t) for t in out[0, len(prompt) :]]


def decode(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert isinstance(text, str)
    return text


def joined(deltas: Iterable[Delta], index: int = 0) -> tuple[str, list[TokenLogprob], list[Delta]]:
    mine = [d for d in deltas if d.index == index]
    return "".join(d.text for d in mine), [e for d in mine for e in d.logprobs or []], mine


def text_of(server: ModelServer, prompt: list[int], adapter: tuple[str, Path] | None) -> str:
    return server.generate(prompt, GREEDY, adapter).choices[0].text


def test_greedy_equals_hf_generate_for_base_and_adapter(
    server: ModelServer, lively_dir: Path, adapters: dict[str, tuple[str, Path]], prompt: list[int]
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(lively_dir)
    hf_model = AutoModelForCausalLM.from_pretrained(lively_dir).eval()
    expected_base = hf_greedy(hf_model, prompt, 24)
    hf_peft = PeftModel.from_pretrained(hf_model, adapters["a"][1]).eval()
    expected_a = hf_greedy(hf_peft, prompt, 24)
    params = GenerationParams(max_new_tokens=24, temperature=0)

    for adapter, expected in ((None, expected_base), (adapters["a"], expected_a)):
        result = server.generate(prompt, params, adapter)
        assert result.choices[0].text == decode(tokenizer, expected)
        assert result.completion_tokens == len(expected)
        assert result.prompt_tokens == len(prompt)
    assert expected_base != expected_a


def test_smollm2_greedy_equals_hf_generate_and_its_stream(smollm2_dir: Path) -> None:
    server = ModelServer(smollm2_dir)
    prompt = server.chat_prompt([{"role": "user", "content": "What is the capital of France?"}])
    expected = hf_greedy(AutoModelForCausalLM.from_pretrained(smollm2_dir).eval(), prompt, 12)
    assert expected[-1] == 2  # <|im_end|>: the answer is short
    params = GenerationParams(max_new_tokens=12, temperature=0, logprobs=True, top_logprobs=2)

    result = server.generate(prompt, params)
    choice = result.choices[0]
    assert choice.text == decode(AutoTokenizer.from_pretrained(smollm2_dir), expected)
    assert "Paris" in choice.text
    assert (choice.finish_reason, result.completion_tokens) == ("stop", len(expected))
    text, entries, deltas = joined(server.stream(prompt, params))
    assert (text, entries) == (choice.text, choice.logprobs)
    assert [d.finish_reason for d in deltas] == [None] * (len(deltas) - 1) + [choice.finish_reason]


def test_stream_concatenates_to_generate(server: ModelServer, prompt: list[int]) -> None:
    params = GenerationParams(max_new_tokens=20, temperature=0, logprobs=True, top_logprobs=1)
    choice = server.generate(prompt, params).choices[0]
    text, entries, deltas = joined(server.stream(prompt, params))
    assert (text, entries) == (choice.text, choice.logprobs)
    assert len(deltas) > 2 and deltas[-1].finish_reason == "length" and deltas[-1].completion_tokens == 20


def test_stop_strings_cut_the_text(server: ModelServer, prompt: list[int]) -> None:
    full = text_of(server, prompt, None)
    assert len(full) > 20
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    params = GenerationParams(max_new_tokens=16, temperature=0, stop=["never \x00 seen", stop])

    result = server.generate(params=params, prompt_ids=prompt)
    assert result.choices[0].text == full[: full.index(stop)]
    assert result.choices[0].finish_reason == "stop"
    assert result.completion_tokens < 16
    text, _, deltas = joined(server.stream(prompt, params))
    assert text == result.choices[0].text and deltas[-1].finish_reason == "stop"


def test_max_new_tokens_ends_with_length(server: ModelServer, prompt: list[int]) -> None:
    result = server.generate(prompt, GenerationParams(max_new_tokens=7, temperature=0, logprobs=True))
    assert result.choices[0].finish_reason == "length"
    assert result.completion_tokens == 7
    assert result.choices[0].logprobs is not None and len(result.choices[0].logprobs) == 7


def test_seed_makes_sampling_repeatable(server: ModelServer, prompt: list[int]) -> None:
    def sample(seed: int) -> str:
        params = GenerationParams(max_new_tokens=16, temperature=1.5, top_p=0.95, seed=seed)
        return server.generate(prompt, params).choices[0].text

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


def test_n_choices(server: ModelServer, prompt: list[int]) -> None:
    params = GenerationParams(max_new_tokens=8, temperature=1.5, n=3, seed=0)
    result = server.generate(prompt, params)
    assert [c.index for c in result.choices] == [0, 1, 2]
    assert len({c.text for c in result.choices}) > 1
    assert result.completion_tokens == 24  # no eos in 8 tokens of this model
    # Each choice has its own stream seeded from the request's seed.
    assert [c.text for c in server.generate(prompt, params).choices] == [c.text for c in result.choices]
    # Each choice continues the prompt from its own copy of the KV cache.
    greedy = server.generate(prompt, dataclasses.replace(GREEDY, n=2))
    assert [c.text for c in greedy.choices] == [text_of(server, prompt, None)] * 2


def test_logprobs(server: ModelServer, prompt: list[int]) -> None:
    params = GenerationParams(max_new_tokens=10, temperature=0, logprobs=True, top_logprobs=4)
    choice = server.generate(prompt, params).choices[0]
    assert choice.logprobs is not None and len(choice.logprobs) == 10
    for entry in choice.logprobs:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 4
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs), reverse=True)
        # Greedy without penalties takes the most likely token.
        assert (entry.token, entry.logprob) == (entry.top_logprobs[0].token, entry.top_logprobs[0].logprob)
    assert b"".join(bytes(e.bytes) for e in choice.logprobs).decode() == choice.text
    assert server.generate(prompt, GREEDY).choices[0].logprobs is None


def test_presence_penalty_stops_repeats(server: ModelServer, prompt: list[int]) -> None:
    def tokens(penalty: float) -> list[str]:
        params = GenerationParams(max_new_tokens=24, temperature=0, logprobs=True, presence_penalty=penalty)
        return [e.token for e in server.generate(prompt, params).choices[0].logprobs or []]

    assert max(Counter(tokens(0)).values()) > 1  # this model loves repeating itself
    assert max(Counter(tokens(100)).values()) == 1


def test_adapters_switch_back_and_forth(
    server: ModelServer, adapters: dict[str, tuple[str, Path]], prompt: list[int], solo: dict[str | None, str]
) -> None:
    assert len(set(solo.values())) == 3
    for name in ["a", None, "b", "a", None, "b"]:
        assert text_of(server, prompt, adapters[name] if name else None) == solo[name], name


def test_lru_evicts_and_reloads(
    lively_dir: Path, adapters: dict[str, tuple[str, Path]], prompt: list[int], solo: dict[str | None, str]
) -> None:
    server = ModelServer(lively_dir, max_loaded_adapters=1)
    for name in ["a", "b", "a", None, "b"]:
        assert text_of(server, prompt, adapters[name] if name else None) == solo[name], name
        assert len(server.loaded_adapters) == 1
    server.unload_adapter(adapters["b"][0])
    assert server.loaded_adapters == []
    assert text_of(server, prompt, None) == solo[None]
    assert text_of(server, prompt, adapters["a"]) == solo["a"]


def test_concurrent_requests_keep_their_adapters(
    server: ModelServer, adapters: dict[str, tuple[str, Path]], prompt: list[int], solo: dict[str | None, str]
) -> None:
    names: list[str | None] = ["a", "b", None]
    start = threading.Barrier(len(names))

    def run(name: str | None) -> list[str]:
        start.wait()
        return [joined(server.stream(prompt, GREEDY, adapters[name] if name else None))[0] for _ in range(2)]

    with ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(run, names))
    assert results == [[solo[name]] * 2 for name in names]


def test_concurrent_streams_take_turns(server: ModelServer, prompt: list[int]) -> None:
    start = threading.Barrier(2)
    order: list[int] = []

    def run(who: int) -> None:
        start.wait()
        for _ in server.stream(prompt, GenerationParams(max_new_tokens=24, temperature=0)):
            order.append(who)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(run, [0, 1]))
    # Neither stream waits for the other to end: they take turns all along.
    assert sum(a != b for a, b in itertools.pairwise(order)) > 10


def test_prompt_too_long(server: ModelServer) -> None:
    limit = server.context_length
    with pytest.raises(PromptTooLong) as raised:
        server.stream([1] * limit, GREEDY)  # raises before the first delta
    assert (raised.value.prompt_tokens, raised.value.context_length) == (limit, limit)
    assert isinstance(raised.value, ValueError)
    result = server.generate([1] * (limit - 1), GREEDY)
    assert (result.choices[0].finish_reason, result.completion_tokens) == ("length", 1)


def test_params_are_checked() -> None:
    for bad in [
        {"stop": ["a", "b", "c", "d", "e"]},
        {"stop": [""]},
        {"top_logprobs": 21, "logprobs": True},
        {"top_logprobs": 2},
        {"temperature": -1.0},
        {"top_p": 0.0},
        {"n": 0},
        {"max_new_tokens": 0},
    ]:
        with pytest.raises(ValueError):
            GenerationParams(**bad)  # type: ignore[arg-type]


def test_detokenizer_holds_back_incomplete_characters(tokenizer: PreTrainedTokenizerBase) -> None:
    text = "Grüße, 世界! 🎉👍🏽 naïve café ✓"
    ids = tokenizer.encode(text, add_special_tokens=False)
    detokenizer = _Detokenizer(tokenizer)
    pieces = [detokenizer.push(i) for i in ids] + [detokenizer.flush()]
    assert "".join(pieces) == text
    assert "" in pieces[:-1]  # some character took several tokens
    assert not any("\ufffd" in p for p in pieces)
    byte_decoder = _byte_decoder(tokenizer)
    assert b"".join(_token_bytes(tokenizer, byte_decoder, i) for i in ids) == text.encode()


def test_stop_gate_finds_stops_across_pieces() -> None:
    gate = _StopGate(["o W", "xyz"])
    entries = [TokenLogprob(t, -1.0, list(t.encode()), []) for t in ["Hel", "lo", " Wo"]]
    assert gate.push("Hel", entries[:1]) == ("Hel", entries[:1], False)
    assert gate.push("lo", entries[1:2]) == ("l", entries[1:2], False)  # "o" may start "o W"
    assert gate.push(" Wo", entries[2:]) == ("", [], True)
    assert _StopGate(["xyz"]).push("abcx", []) == ("abc", [], False)


def test_sample_follows_top_p() -> None:
    generator = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])
    counts = Counter(_sample(probs, 0.8, generator) for _ in range(4000))
    assert set(counts) == {1, 3}  # 0.5 + 0.3 reach 0.8
    assert counts[1] / 4000 == pytest.approx(0.5 / 0.8, abs=0.03)
    counts = Counter(_sample(probs, 1.0, generator) for _ in range(4000))
    assert counts[0] / 4000 == pytest.approx(0.05, abs=0.015)


def test_a_cancelled_request_leaves_the_batch(server: ModelServer, prompt: list[int]) -> None:
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()
    cancelled = server.stats().cancelled
    request = server.submit(prompt, GenerationParams(max_new_tokens=2000, temperature=0), events.put)
    assert isinstance(events.get(timeout=60), Delta)
    request.cancel()
    wait_until(lambda: server.stats().cancelled == cancelled + 1, timeout=30, what="the cancel")
    assert server.stats().running == 0 and server.stats().requests == 0


def test_a_key_with_nothing_running_takes_a_row_and_the_taken_row_resumes_unchanged(
    lively_dir: Path, prompt: list[int]
) -> None:
    server = ModelServer(lively_dir, max_batch_size=2)
    params = GenerationParams(max_new_tokens=300, temperature=0)
    alone = server.generate(prompt, params).choices[0].text
    busy: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue() for _ in range(3)]
    for events in busy:
        server.submit(prompt, params, events.put, key="a")
    wait_until(lambda: server.stats().running == 2, timeout=30, what="key a to fill the batch")
    short = server.generate(prompt, GenerationParams(max_new_tokens=4, temperature=0), key="b")
    assert short.completion_tokens == 4
    assert server.stats().preempted == 1 and server.stats().requests == 3  # b did not wait for a's three
    texts = ["".join(event.text for event in _drain(events)) for events in busy]
    assert texts == [alone] * 3  # the row taken out recomputed its cache and went on as before


def test_long_prompts_are_prefilled_in_chunks_between_decode_steps(lively_dir: Path, server: ModelServer) -> None:
    chunked = ModelServer(lively_dir, prefill_chunk_tokens=4)
    long_prompt = chunked.chat_prompt([{"role": "user", "content": "Tell me about herons and egrets. " * 6}])
    assert len(long_prompt) > 60
    running: queue.SimpleQueue[Any] = queue.SimpleQueue()
    chunked.submit(long_prompt, GenerationParams(max_new_tokens=1000, temperature=0), running.put)
    running.get(timeout=60)
    steps_before = chunked.stats().steps
    result = chunked.generate(long_prompt, GREEDY)
    # The running request kept decoding, a step per chunk, while the long prompt was prefilled.
    assert chunked.stats().steps - steps_before >= len(long_prompt) // 4
    assert result.choices[0].text == server.generate(long_prompt, GREEDY).choices[0].text
    chunked.close()


def _drain(events: queue.SimpleQueue[Any]) -> list[Delta]:
    deltas: list[Delta] = []
    while not deltas or deltas[-1].finish_reason is None:
        event = events.get(timeout=120)
        assert isinstance(event, Delta), event
        deltas.append(event)
    return deltas


def test_an_adapter_that_does_not_fit_fails_its_request_only(
    server: ModelServer,
    adapters: dict[str, tuple[str, Path]],
    prompt: list[int],
    solo: dict[str | None, str],
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(adapters["a"][1], broken)
    config = json.loads((broken / "adapter_config.json").read_text())
    (broken / "adapter_config.json").write_text(json.dumps({**config, "r": config["r"] * 2}))
    running: queue.SimpleQueue[Any] = queue.SimpleQueue()
    server.submit(prompt, GenerationParams(max_new_tokens=40, temperature=0), running.put, adapters["b"])
    with pytest.raises(ValueError, match="don't fit"):
        server.generate(prompt, GREEDY, ("ft:broken", broken))
    assert "".join(delta.text for delta in _drain(running)).startswith(solo["b"])  # not disturbed
    assert "ft:broken" not in server.loaded_adapters
    assert text_of(server, prompt, adapters["a"]) == solo["a"]  # nothing of the broken one stayed behind

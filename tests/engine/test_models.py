from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer

from openft.engine import build_tiny_model, convert_gguf, embedded_gguf_path
from openft.engine.convert import build_once

STOCK_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)


def test_embedded_gguf_is_found() -> None:
    path = embedded_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000


def test_converted_smollm2_is_a_plain_hf_dir(smollm2_dir: Path) -> None:
    config = AutoConfig.from_pretrained(smollm2_dir)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)

    assert config.model_type == "llama" and config.num_hidden_layers == 30
    assert config.hidden_size == 576 and config.vocab_size == 49152 and config.tie_word_embeddings
    assert getattr(config, "quantization_config", None) is None
    assert tokenizer.chat_template == STOCK_TEMPLATE
    assert tokenizer.pad_token_id == 2 and tokenizer.eos_token == "<|im_end|>"
    assert (smollm2_dir / "model.safetensors").is_file()


def test_convert_is_idempotent(smollm2_dir: Path) -> None:
    weights = smollm2_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns

    assert convert_gguf(embedded_gguf_path(), smollm2_dir) == smollm2_dir
    assert weights.stat().st_mtime_ns == before


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def build(scratch: Path) -> None:
        (scratch / "half.bin").write_bytes(b"x")
        raise RuntimeError("crash mid-build")

    with pytest.raises(RuntimeError):
        build_once(tmp_path / "model", build)
    assert list(tmp_path.iterdir()) == []


def test_tiny_model_is_small_and_seeded(tiny_dir: Path, smollm2_dir: Path, tmp_path: Path) -> None:
    config = json.loads((tiny_dir / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"]) == (2, 64, 4)
    assert AutoTokenizer.from_pretrained(tiny_dir).chat_template == STOCK_TEMPLATE

    again = load_file(build_tiny_model(smollm2_dir, tmp_path / "again") / "model.safetensors")
    other = load_file(build_tiny_model(smollm2_dir, tmp_path / "other", seed=1) / "model.safetensors")
    original = load_file(tiny_dir / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert all(again[k].equal(v) for k, v in original.items())
    assert not other[name].equal(original[name])

"""Randomly initialised Llamas with a real tokenizer: a tiny one that trains in seconds, for
lifecycle tests, and larger ones whose step costs what a real model's does, for the training bench."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from openft.engine.convert import build_once


def build_tiny_model(tokenizer_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    """Save a 2-layer, hidden-64 Llama with the tokenizer (and chat template) of `tokenizer_dir`.

    Idempotent and atomic like `convert_gguf`; returns `out_dir`.
    """
    return build_random_llama(
        tokenizer_dir,
        out_dir,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        seed=seed,
    )


def build_random_llama(
    tokenizer_dir: Path,
    out_dir: Path,
    *,
    hidden_size: int,
    intermediate_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    max_position_embeddings: int = 2048,
    seed: int = 0,
) -> Path:
    """Save a Llama of this shape, tied embeddings, fp32 weights drawn from `seed`, with the
    tokenizer (and chat template) of `tokenizer_dir`. Idempotent and atomic like `convert_gguf`;
    returns `out_dir`."""

    def build(tmp: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            max_position_embeddings=max_position_embeddings,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        # A private RNG stream keeps the weights a function of `seed` alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlamaForCausalLM(config)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return build_once(out_dir, build)

"""Attention for bf16 LoRA training on a CPU: plain matrix products for short batches, SDPA otherwise.

Profiled on a bf16 LoRA step of the bench data (batches of 4 x 50-290 tokens, AMX CPU), SDPA's CPU
flash kernel spent a quarter of the step in its backward pass, seven times its forward. Attention as
two matrix products and a softmax, with the mask added and the softmax in bf16 (the kernel
accumulates in float32), made whole bench runs 20% faster (docs/training.md, "Training speed").
It keeps every layer's (heads x length x length) softmax for the backward pass, which grows with the
square of the length and is slower than SDPA on long batches: so it is used only while all layers'
scores fit `MATMUL_ATTENTION_BUDGET_BYTES`; longer batches keep SDPA. In fp32 (a CPU without bf16)
transformers' "eager" attention and this one (0.96x) measured slower than SDPA, so fp32 runs keep
SDPA (see `_load_model`).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "openft_short_matmul"

# What the scores of every layer may keep for the backward pass, together: each keeps its softmax,
# in bf16 (2 bytes). 512 MiB lets SmolLM2-135M (30 layers, 9 heads) take a batch of 4 x 498 tokens
# this way. Measured there (decoder forward and backward, unpadded), the gain over SDPA falls from
# 1.26x at 4 x 128 tokens to 1.05x at 4 x 384-512, and at 4 x 768 it ran at half SDPA's speed.
MATMUL_ATTENTION_BUDGET_BYTES = 512 * 2**20
BYTES_PER_SCORE = 2


def short_matmul_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A transformers attention function (see `use_short_matmul_attention`); the mask is SDPA's:
    boolean (True attends) or None for plain causal attention."""
    batch, heads, q_len, _ = query.shape
    kv_len = key.shape[2]
    layers = getattr(getattr(module, "config", None), "num_hidden_layers", 32)
    short = batch * heads * q_len * kv_len * BYTES_PER_SCORE * layers <= MATMUL_ATTENTION_BUDGET_BYTES
    # Not only in training: the same batch gets the same values with or without gradients (DPO
    # compares the two at the start); without them no scores are kept.
    if not short or kwargs.get("softcap") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    groups = heads // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    if attention_mask is None:  # SDPA's mask leaves out a plain causal one
        attention_mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(kv_len - q_len)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query * scale, key.transpose(2, 3))  # scaled on the smaller side
    # Masked scores get the dtype's lowest value (added, so that the backward pass has nothing to
    # mask), not -inf: a row with nothing to attend to (a pad) gets a uniform softmax instead of
    # NaN; its output is never trained on.
    bias = torch.zeros(attention_mask.shape, dtype=scores.dtype, device=scores.device)
    scores = scores + bias.masked_fill_(~attention_mask, torch.finfo(scores.dtype).min)
    # In the scores' dtype: the CPU kernel accumulates bf16 in float32 and rounds the result once,
    # as a float32 softmax cast to bf16 would, at a third of the memory kept for the backward pass.
    weights = torch.softmax(scores, dim=-1)
    if dropout:
        weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, short_matmul_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


def use_short_matmul_attention(model: PreTrainedModel) -> None:
    """Switches `model` (a transformers model whose attention is SDPA) to `short_matmul_attention`."""
    if model.config._attn_implementation == "sdpa":
        model.set_attn_implementation(NAME)

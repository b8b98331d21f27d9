"""Attention for bf16 LoRA training on a CPU: plain matrix products for short batches, SDPA otherwise.

Profiled on a bf16 LoRA step of the bench data (batches of 4 x 50-290 tokens, AMX CPU), SDPA's CPU
flash kernel spent a quarter of the step in its backward pass, seven times its forward. Attention as
two matrix products and a softmax (as transformers' "eager") ran the bench's batches 1.18x as fast
there (1.06-1.40x by length; 7% on a Zen 4), but it keeps every layer's (heads x length x length)
scores for the backward pass, which grows with the square of the length: so it is used only while
all layers' scores stay within `MATMUL_ATTENTION_BUDGET_BYTES`, and only when training; longer
batches and inference keep SDPA. In fp32 (a CPU without bf16) it measured slower, so fp32 runs keep
SDPA everywhere (see `_load_model`).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "openft_short_matmul"

# What the scores of every layer may keep for the backward pass, together: each score keeps its
# float32 softmax (4 bytes) and that softmax's bf16 copy (2). 512 MiB lets SmolLM2-135M (30 layers,
# 9 heads) take a batch of 4 x 287 tokens this way, about the longest bench batch (4 x 290); measured
# there, the gain falls from 1.3-1.4x at 4 x 107-144 tokens to 1.06x at 4 x 252.
MATMUL_ATTENTION_BUDGET_BYTES = 512 * 2**20
BYTES_PER_SCORE = 6


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
    if not (short and module.training and torch.is_grad_enabled()) or kwargs.get("softcap") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    groups = heads // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    if attention_mask is None:  # SDPA's mask leaves out a plain causal one
        attention_mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(kv_len - q_len)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scale
    # A large negative rather than -inf: a row with nothing to attend to (a pad) gets a uniform
    # softmax instead of NaN; its output is never trained on.
    scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, short_matmul_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


def use_short_matmul_attention(model: PreTrainedModel) -> None:
    """Switches `model` (a transformers model whose attention is SDPA) to `short_matmul_attention`."""
    if model.config._attn_implementation == "sdpa":
        model.set_attn_implementation(NAME)

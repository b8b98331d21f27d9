"""What the training objectives share: the transformers model inside PEFT's wrapper, and the
logits of the labeled positions of a batch (never the (tokens x vocab) logits of prompts and pads)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft import PeftModel
from transformers import PreTrainedModel

from openft.engine.data import IGNORE_INDEX, Batch


@dataclass(frozen=True)
class StepStats:
    """What an objective computes on one batch."""

    loss: torch.Tensor  # mean over the batch (with grad when training)
    accuracy: float  # token accuracy (supervised) or preference accuracy (DPO)
    weight: int  # what the mean is over: labeled tokens, or pairs
    margin: float | None = None  # DPO: the mean reward margin


def causal_lm(model: torch.nn.Module) -> PreTrainedModel:
    """The transformers model itself (inside PEFT's wrapper, with the LoRA layers in it)."""
    lm = model.get_base_model() if isinstance(model, PeftModel) else model
    assert isinstance(lm, PreTrainedModel)
    return lm


def labeled_logits(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(float32 logits [n, vocab], targets [n], row of each [n]) for the n labeled tokens of `batch`.

    Runs the decoder to hidden states and applies the LM head only where a label is. Under bf16
    training the caller runs this inside `mixed_precision`; the logits come back float32 either way.
    """
    lm = causal_lm(model)
    hidden = lm.get_decoder()(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
    ).last_hidden_state
    # The hidden state at position t predicts the token at t + 1.
    targets = batch.labels[:, 1:]
    keep = targets != IGNORE_INDEX
    logits = lm_logits(lm, hidden[:, :-1][keep]).float()
    rows = keep.nonzero()[:, 0]
    return logits, targets[keep], rows


def mixed_precision(device: torch.device, precision: str) -> torch.autocast:
    """The forward passes' context: under "bf16" the matmuls run in bf16 (autocast), while the
    trainable weights, their gradients, the optimizer state and the loss stay float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def lm_logits(lm: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    head = lm.get_output_embeddings()
    assert isinstance(head, torch.nn.Module)
    logits: torch.Tensor = head(hidden)
    # Bypassing forward() skips the logit post-processing a few architectures do there.
    config = lm.config
    if cap := getattr(config, "final_logit_softcapping", None):  # Gemma 2/3
        logits = torch.tanh(logits / cap) * cap
    if scale := getattr(config, "logit_scale", None):  # Cohere
        logits = logits * scale
    if scaling := getattr(config, "logits_scaling", None):  # Granite
        logits = logits / scaling
    return logits

"""What the training objectives share: the transformers model inside PEFT's wrapper, and the
log-probabilities of the labeled tokens of a batch (never the (tokens x vocab) logits of prompts and pads)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from peft import PeftModel
from torch.utils.checkpoint import checkpoint
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


# Rows of the LM head computed at a time. The (rows x vocab) float32 logits of a whole batch
# (about 190 MB for 1,000 labeled tokens and a 49k vocabulary) and the same again for each of
# their gradients made a third of a LoRA step on a CPU: allocating, filling and reading them.
# In chunks they stay in the cache (see `labeled_logprobs`). 64 rows measured best with autograd's
# cross-entropy; with the closed-form gradient 128 ran 4-5% faster than 64 in bf16 and 7% in fp32,
# 256 no faster than 128 (paired steps, docs/training.md "Training speed").
HEAD_CHUNK_ROWS = 128


# Config fields by which a few architectures change the head's logits (see `lm_logits`).
LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling")


@dataclass(frozen=True)
class LabeledTokens:
    """What the LM head says about the n labeled tokens of a batch."""

    logprobs: torch.Tensor  # [n] float32: log-probability of each target (with grad when training)
    correct: torch.Tensor  # [n] bool: the target was the argmax
    rows: torch.Tensor  # [n]: the batch row of each


def labeled_logprobs(model: torch.nn.Module, batch: Batch) -> LabeledTokens:
    """Runs the decoder to hidden states and the LM head only where a label is, a chunk of
    `HEAD_CHUNK_ROWS` positions at a time, keeping no chunk's logits for the backward pass: a
    frozen head (LoRA) takes each chunk's gradient at once (`_FrozenHeadLogprobs`), a trained one
    checkpoints the chunk (backward recomputes its logits). Under bf16 training the caller runs
    this inside `mixed_precision` (checkpointing replays the autocast state); log-softmax is in
    float32."""
    lm = causal_lm(model)
    hidden = lm.get_decoder()(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
    ).last_hidden_state
    # The hidden state at position t predicts the token at t + 1.
    targets = batch.labels[:, 1:]
    keep = targets != IGNORE_INDEX
    labeled_hidden, labeled_targets = hidden[:, :-1][keep], targets[keep]
    # At least one chunk, so that a batch with no labels still gives (empty) tensors in the graph.
    starts = range(0, max(len(labeled_targets), 1), HEAD_CHUNK_ROWS)
    pieces = [(labeled_hidden[i : i + HEAD_CHUNK_ROWS], labeled_targets[i : i + HEAD_CHUNK_ROWS]) for i in starts]
    head = lm.get_output_embeddings()
    assert isinstance(head, torch.nn.Module)
    if not labeled_hidden.requires_grad:
        chunks = [_head_logprobs(lm, h, t) for h, t in pieces]
    elif any(p.requires_grad for p in head.parameters()):
        chunks = [checkpoint(_head_logprobs, lm, h, t, use_reentrant=False) for h, t in pieces]
    else:
        chunks = [_FrozenHeadLogprobs.apply(h, t, lm) for h, t in pieces]
    return LabeledTokens(
        logprobs=torch.cat([logprobs for logprobs, _ in chunks]),
        correct=torch.cat([correct for _, correct in chunks]),
        rows=keep.nonzero()[:, 0],
    )


def _head_logprobs(
    lm: PreTrainedModel, hidden: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = lm_logits(lm, hidden).float()
    logprobs = -F.cross_entropy(logits, targets, reduction="none")
    return logprobs, logits.argmax(dim=-1) == targets


class _FrozenHeadLogprobs(torch.autograd.Function):
    """`_head_logprobs` of a head without trainable weights, whose backward pass needs no logits.

    Each labeled position's log-probability depends on its own hidden state only, so one backward
    pass of the chunk's summed log-probabilities, taken in the forward pass, gives every row's
    gradient (d logprob_i / d hidden_i); the real backward pass scales row i by its incoming
    gradient. That is the chain rule, exactly, for any use of the log-probabilities (SFT's sum,
    DPO's per-sequence sums), and it replaces checkpointing's second forward pass of the head.
    A plain linear head takes that gradient in closed form (`_linear_head_gradients`)."""

    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, targets: torch.Tensor, lm: PreTrainedModel
    ) -> tuple[torch.Tensor, torch.Tensor]:
        head = lm.get_output_embeddings()
        if isinstance(head, torch.nn.Linear) and not any(getattr(lm.config, k, None) for k in LOGIT_POSTPROCESSING):
            logprobs, correct, ctx.row_grads = _linear_head_gradients(head, hidden, targets)
        else:
            with torch.enable_grad():
                row_input = hidden.detach().requires_grad_()
                logprobs, correct = _head_logprobs(lm, row_input, targets)
                (ctx.row_grads,) = torch.autograd.grad(logprobs.sum(), row_input)
        ctx.mark_non_differentiable(correct)
        return logprobs.detach(), correct

    @staticmethod
    def backward(ctx: Any, grad_logprobs: torch.Tensor, _grad_correct: Any) -> tuple[torch.Tensor, None, None]:
        row_grads: torch.Tensor = ctx.row_grads
        return (grad_logprobs[:, None] * row_grads.float()).to(row_grads.dtype), None, None


def _linear_head_gradients(
    head: torch.nn.Linear, hidden: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A plain linear head's log-probabilities, argmax hits and d logprob_i / d hidden_i, in the
    closed form: d logprob / d logits = one_hot(target) - softmax(logits). Worked in place on
    reused (rows x vocab) buffers, this skips what autograd's cross-entropy does beside it: a
    zero-filled gradient buffer, log-softmax's backward pass and a separate argmax pass."""
    device, rows = hidden.device, hidden.shape[0]
    # The dtype autocast would run the matmuls in; out= and explicit casts are outside its reach.
    dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else head.weight.dtype
    weight = head.weight.to(dtype)
    logits = _head_buffer(device, dtype, rows, weight.shape[0])
    with torch.autocast(device.type, enabled=False):
        if head.bias is None:
            torch.mm(hidden.to(dtype), weight.t(), out=logits)
        else:
            torch.addmm(head.bias.to(dtype), hidden.to(dtype), weight.t(), out=logits)
        scores = logits if dtype == torch.float32 else _head_buffer(device, torch.float32, *logits.shape).copy_(logits)
        best, best_index = scores.max(dim=-1)
        target_scores = scores.gather(1, targets[:, None])[:, 0]
        probs = scores.sub_(best[:, None]).exp_()
        total = probs.sum(dim=-1)
        logprobs = target_scores - best - total.log()
        probs.div_(total[:, None]).scatter_add_(1, targets[:, None], torch.full_like(target_scores[:, None], -1.0))
        # probs is now softmax - one_hot = -(d logprob / d logits); the matmul runs in the forward's dtype.
        row_grads = torch.mm(probs if dtype == torch.float32 else logits.copy_(probs), weight).neg_()
    return logprobs, best_index == targets, row_grads.to(hidden.dtype)


# The head's (rows x vocab) working buffers, by device, dtype and vocabulary size, kept between
# chunks and steps (about 38 MB at 128 rows and a 49k vocabulary). Profiled in a bf16 CPU training step,
# casting a chunk's logits into a fresh float32 tensor took 9 ms, into a reused one 0.5 ms (in a
# loop, where the allocator hands the same memory back, a fresh one took 0.6 ms).
_head_buffers: dict[tuple[torch.device, torch.dtype, int], torch.Tensor] = {}


def _head_buffer(device: torch.device, dtype: torch.dtype, rows: int, vocab: int) -> torch.Tensor:
    buffer = _head_buffers.get((device, dtype, vocab))
    if buffer is None or len(buffer) < rows:
        buffer = _head_buffers[(device, dtype, vocab)] = torch.empty(
            max(rows, HEAD_CHUNK_ROWS), vocab, dtype=dtype, device=device
        )
    return buffer[:rows]


def mixed_precision(device: torch.device, precision: str) -> torch.autocast:
    """The forward passes' context: under "bf16" the matmuls run in bf16 (autocast), while the
    trainable weights, their gradients, the optimizer state and the loss stay float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def lm_logits(lm: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    head = lm.get_output_embeddings()
    assert isinstance(head, torch.nn.Module)
    logits: torch.Tensor = head(hidden)
    # Bypassing forward() skips the logit post-processing a few architectures do there
    # (LOGIT_POSTPROCESSING).
    config = lm.config
    if cap := getattr(config, "final_logit_softcapping", None):  # Gemma 2/3
        logits = torch.tanh(logits / cap) * cap
    if scale := getattr(config, "logit_scale", None):  # Cohere
        logits = logits * scale
    if scaling := getattr(config, "logits_scaling", None):  # Granite
        logits = logits / scaling
    return logits

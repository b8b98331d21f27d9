"""The LM head in chunks gives what the whole (tokens x vocab) logits give, values and gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from openft.engine import lm
from openft.engine.data import IGNORE_INDEX, Batch


def _batch(vocab: int) -> Batch:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab, (3, 40), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 30:] = 0  # a padded row
    labels = input_ids.clone()
    labels[:, :10] = IGNORE_INDEX  # a prompt
    labels[attention_mask == 0] = IGNORE_INDEX
    return Batch(input_ids, attention_mask, labels, int(attention_mask.sum()))


def _whole_head(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
    targets = batch.labels[:, 1:]
    keep = targets != IGNORE_INDEX
    return -F.cross_entropy(logits[keep], targets[keep], reduction="none"), logits[keep].argmax(-1) == targets[keep]


def _gradients(model: torch.nn.Module) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("frozen_head", [False, True], ids=["trained-head", "frozen-head"])
@pytest.mark.parametrize("chunk_rows", [7, 1000])
def test_chunked_head_matches_the_whole_logits(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch, chunk_rows: int, frozen_head: bool
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    if frozen_head:  # as under LoRA; the head is tied to the input embedding, frozen with it
        model.get_output_embeddings().weight.requires_grad_(False)
    batch = _batch(model.config.vocab_size)
    monkeypatch.setattr(lm, "HEAD_CHUNK_ROWS", chunk_rows)
    # A different weight for every token's log-probability, as DPO's per-answer sums make them.
    token_weights = torch.rand(80, generator=torch.Generator().manual_seed(1))

    labeled = lm.labeled_logprobs(model, batch)
    (labeled.logprobs * token_weights).sum().backward()
    chunked_grads = _gradients(model)
    expected, expected_correct = _whole_head(model, batch)
    (expected * token_weights).sum().backward()
    whole_grads = _gradients(model)

    assert labeled.logprobs.shape == (80,)  # 30 labeled targets in each full row, 20 in the padded one
    torch.testing.assert_close(labeled.logprobs, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(labeled.correct, expected_correct)
    assert labeled.rows.tolist() == [0] * 30 + [1] * 30 + [2] * 20
    assert len(chunked_grads) == len(whole_grads) > 0  # the tied embedding / LM head included unless frozen
    for chunked, whole in zip(chunked_grads, whole_grads, strict=True):
        # Only the order of float32 sums differs: within 1e-4 of each tensor's scale.
        torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-4 * float(whole.abs().max()))


def test_a_batch_without_labels_gives_empty_tensors_in_the_graph(tiny_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    batch = _batch(model.config.vocab_size)
    batch = Batch(batch.input_ids, batch.attention_mask, torch.full_like(batch.labels, IGNORE_INDEX), batch.n_tokens)

    labeled = lm.labeled_logprobs(model, batch)
    loss = -labeled.logprobs.sum()
    loss.backward()  # a zero loss that still backpropagates

    assert labeled.logprobs.numel() == labeled.correct.numel() == labeled.rows.numel() == 0
    assert float(loss) == 0.0


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_linear_heads_closed_form_gradient_is_autograds(dtype: torch.dtype, bias: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(32, 500, bias=bias).to(dtype).requires_grad_(False)
    # A short chunk, then one of more rows than a chunk (the reused buffers grow), then a short one.
    for rows in (20, lm.HEAD_CHUNK_ROWS + 70, 5):
        hidden = torch.randn(rows, 32, generator=generator).to(dtype)
        targets = torch.randint(0, 500, (rows,), generator=generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            logprobs, correct, row_grads = lm._linear_head_gradients(head, hidden, targets)
            row_input = hidden.clone().requires_grad_()
            logits = head(row_input).float()
            expected = -F.cross_entropy(logits, targets, reduction="none")
        (expected_grads,) = torch.autograd.grad(expected.sum(), row_input)

        tolerance = 1e-5 if dtype == torch.float32 else 1e-2  # bf16: the matmuls round differently
        torch.testing.assert_close(logprobs, expected, rtol=tolerance, atol=tolerance)
        assert torch.equal(correct, logits.argmax(-1) == targets)
        assert row_grads.dtype == dtype
        torch.testing.assert_close(row_grads.float(), expected_grads.float(), rtol=tolerance, atol=tolerance)

"""Short batches' matmul attention against SDPA, on the tiny (2-layer, random) Llama of the tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from openft.engine import attention
from openft.engine.attention import NAME, use_short_matmul_attention


def _model(tiny_dir: Path, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    # 4 query heads over 2 key/value heads, so the grouped-query path is exercised too.
    return AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=dtype, attn_implementation="sdpa").train()


def _graph_names(tensor: torch.Tensor) -> set[str]:
    names, todo, seen = set(), [tensor.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo.extend(next_fn for next_fn, _ in node.next_functions)
    return names


def _forward_backward(
    model: PreTrainedModel, implementation: str, padded: bool
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.set_attn_implementation(implementation)
    model.zero_grad()
    input_ids = torch.randint(0, 128, (3, 12), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones(3, 12, dtype=torch.long)
    if padded:
        attention_mask[1, 8:] = 0  # right padding, as openft's batches pad
    hidden = model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    real = attention_mask.bool()
    hidden[real].square().sum().backward()
    return hidden[real].detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("padded", [True, False])
def test_matmul_attention_equals_sdpa(tiny_dir: Path, padded: bool) -> None:
    model = _model(tiny_dir, torch.float64)  # so that what is compared is the arithmetic, not rounding
    want, want_grads = _forward_backward(model, "sdpa", padded)
    got, got_grads = _forward_backward(model, NAME, padded)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert len(got_grads) == len(want_grads) > 0
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def _attention_graph(model: PreTrainedModel, length: int) -> set[str]:
    input_ids = torch.zeros(2, length, dtype=torch.long)
    return _graph_names(model.model(input_ids=input_ids).last_hidden_state)


def test_long_batches_keep_sdpa(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(tiny_dir)
    use_short_matmul_attention(model)
    assert model.config._attn_implementation == NAME
    assert "SoftmaxBackward0" in _attention_graph(model, 16)
    # Scores over the budget (2 rows x 4 heads x 16 x 16 x 2 layers x 2 bytes = 8 KiB) go to SDPA.
    monkeypatch.setattr(attention, "MATMUL_ATTENTION_BUDGET_BYTES", 4 * 1024)
    assert "SoftmaxBackward0" not in _attention_graph(model, 16)
    assert "SoftmaxBackward0" in _attention_graph(model, 8)


def test_scoring_without_gradients_equals_training(tiny_dir: Path) -> None:
    # DPO scores the reference answers without gradients, then trains the same network on them:
    # at the first step both must compute the same (a reward margin of exactly 0).
    model = _model(tiny_dir)
    use_short_matmul_attention(model)
    input_ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(2))
    trained = model.model(input_ids=input_ids).last_hidden_state.detach()
    with torch.no_grad():
        scored = model.eval().model(input_ids=input_ids).last_hidden_state
    assert torch.equal(scored, trained)

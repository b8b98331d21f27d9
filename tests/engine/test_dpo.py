"""DPO through the training loop on the tiny model: it moves the model towards the preferred
answers of pairs it never saw, and its figures, checkpoints and resume work as for supervised."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from openft.engine import TrainConfig
from openft.engine.dpo import collate_pairs, sequence_logps, tokenize_pair

from .support import Recorder, write_jsonl

N_PAIRS, BATCH, EPOCHS = 12, 4, 4


def pairs(numbers: range) -> list[dict[str, Any]]:
    """Preferred: the sum, stated. Non-preferred: a refusal. The rule carries over to new numbers."""
    return [
        {
            "input": {"messages": [{"role": "user", "content": f"What is {i} plus {i + 1}?"}]},
            "preferred_output": [{"role": "assistant", "content": f"{i} plus {i + 1} is {2 * i + 1}."}],
            "non_preferred_output": [{"role": "assistant", "content": "Sorry, I can't help with that."}],
        }
        for i in numbers
    ]


@pytest.fixture
def config(tiny_dir: Path, tmp_path: Path) -> TrainConfig:
    return TrainConfig(
        base_model_dir=tiny_dir,
        train_file=write_jsonl(tmp_path / "train.jsonl", pairs(range(N_PAIRS))),
        validation_file=write_jsonl(tmp_path / "valid.jsonl", pairs(range(100, 104))),
        output_dir=tmp_path / "out",
        training_method="dpo",
        dpo_beta=0.1,
        n_epochs=EPOCHS,
        batch_size=BATCH,
        learning_rate=3e-3,
        eval_interval=2,
    )


def held_out_margins(model: torch.nn.Module, tiny_dir: Path) -> torch.Tensor:
    """log p(preferred) - log p(non-preferred) of each held-out pair."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    held_out = [tokenize_pair(tokenizer, pair, 512) for pair in pairs(range(200, 210))]
    model.eval()
    with torch.no_grad():
        chosen, rejected = sequence_logps(model, collate_pairs(held_out, tokenizer.pad_token_id or 0)).chunk(2)
    return chosen - rejected


def test_dpo_prefers_the_preferred_answers_of_new_pairs(config: TrainConfig, tiny_dir: Path) -> None:
    recorder = Recorder()
    result = recorder.run(config)
    assert result.status == "completed" and result.steps == EPOCHS * N_PAIRS // BATCH

    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    before = held_out_margins(base, tiny_dir)
    assert result.model_path is not None
    trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir), result.model_path)
    after = held_out_margins(trained, tiny_dir)
    # DPO's preference accuracy on pairs it never saw: the preferred answer gained log-probability
    # on the non-preferred one, against the model before training (the reference). Before
    # training every gain is 0, an accuracy of 0.
    gains = after - before
    accuracy = float((gains > 0).float().mean())
    print(f"held-out: preference accuracy 0.00 -> {accuracy:.2f}; log p(preferred) - log p(non-preferred)")
    print(f"  {before.mean():.2f} -> {after.mean():.2f} nats (mean gain {gains.mean():.2f})")
    assert accuracy == 1.0
    assert gains.mean() > 2.0

    # Its figures: DPO's loss starts at log 2 (policy = reference) and falls; accuracy and margin rise.
    first, last = recorder.steps[0], recorder.steps[-1]
    assert first.train_loss == pytest.approx(0.6931, abs=1e-3)
    assert first.train_reward_margin == pytest.approx(0.0, abs=1e-4)
    assert last.train_loss < first.train_loss
    assert last.train_reward_margin is not None and last.train_reward_margin > 0
    assert last.full_valid_loss is not None and last.full_valid_loss < 0.6931
    assert last.full_valid_reward_margin is not None and last.full_valid_reward_margin > 0
    assert [c.step for c in recorder.checkpoints] == [3, 6, 9, 12]


def test_dpo_pause_then_resume_equals_an_uninterrupted_run(config: TrainConfig) -> None:
    straight = Recorder()
    straight.run(dataclasses.replace(config, output_dir=config.output_dir / "straight"))
    paused = Recorder(stop_after=5)
    state = paused.run(config).resume_state
    resumed = Recorder()
    resumed.run(dataclasses.replace(config, resume_from=state))
    combined = paused.steps + resumed.steps
    assert [s.train_loss for s in combined] == pytest.approx([s.train_loss for s in straight.steps], rel=1e-4)
    assert [s.train_reward_margin for s in combined] == pytest.approx(
        [s.train_reward_margin for s in straight.steps], rel=1e-3, abs=1e-5
    )


def test_dpo_continues_from_an_adapter_with_it_as_the_reference(config: TrainConfig, tiny_dir: Path) -> None:
    first = Recorder().run(config)
    assert first.model_path is not None
    continued_recorder = Recorder()
    second = continued_recorder.run(
        dataclasses.replace(config, output_dir=config.output_dir / "continued", init_adapter=first.model_path)
    )
    # The reference is the adapter it starts from: at step 1 policy = reference again.
    assert continued_recorder.steps[0].train_loss == pytest.approx(0.6931, abs=1e-3)
    assert second.model_path is not None
    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    once = held_out_margins(PeftModel.from_pretrained(base, first.model_path), tiny_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    twice = held_out_margins(PeftModel.from_pretrained(base, second.model_path), tiny_dir)
    assert twice.mean() > once.mean()

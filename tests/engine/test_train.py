"""Real training runs of the tiny model (about a second each)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from openft.engine import CheckpointInfo, StepMetrics, TrainConfig, tokenize_example, train
from openft.engine.data import IGNORE_INDEX
from openft.engine.train import lr_at

from .support import Crash, Recorder, tiny_config

N_EXAMPLES, BATCH, EPOCHS = 10, 2, 3
STEPS_PER_EPOCH = 5


@pytest.fixture
def config(tiny_dir: Path, tmp_path: Path) -> TrainConfig:
    # fp32 (tiny_config's) for exact comparisons; bf16 has its own test.
    return tiny_config(
        tiny_dir, tmp_path, N_EXAMPLES, n_epochs=EPOCHS, batch_size=BATCH, learning_rate=0.1, eval_interval=2
    )


def epoch_mean_loss(recorder: Recorder, epoch: int) -> float:
    losses = [s.train_loss for s in recorder.steps if s.epoch == epoch]
    return sum(losses) / len(losses)


def losses(steps: list[StepMetrics]) -> list[float]:
    """Every loss reported, in order, -1 where none was (so lists compare with approx)."""
    values = [(s.train_loss, s.valid_loss, s.full_valid_loss) for s in steps]
    return [-1.0 if v is None else v for triple in values for v in triple]


def test_lora_training_reports_and_learns(config: TrainConfig, tiny_dir: Path) -> None:
    recorder = Recorder()
    result = recorder.run(config)

    total = EPOCHS * STEPS_PER_EPOCH
    assert (result.status, result.steps, result.total_steps) == ("completed", total, total)
    assert [s.step for s in recorder.steps] == list(range(1, total + 1))
    assert epoch_mean_loss(recorder, EPOCHS) < epoch_mean_loss(recorder, 1) - 0.1
    (start,) = recorder.starts
    assert (start.n_train_examples, start.n_valid_examples, start.start_step) == (10, 4, 0)
    # r=8 adapters on q, k, v, o (k and v project to 2 kv heads of 16) and gate, up, down, in 2 layers.
    assert start.trainable_params == 2 * 8 * ((64 + 64) + 2 * (64 + 32) + (64 + 64) + 3 * (64 + 128))

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    lines = config.train_file.read_text().splitlines()
    n_tokens = sum(len(tokenize_example(tokenizer, json.loads(x), 2048).input_ids) for x in lines)
    assert result.trained_tokens == recorder.steps[-1].tokens_seen == EPOCHS * n_tokens

    # Mini-batch validation every eval_interval steps; the full set at the end of each epoch.
    assert [s.step for s in recorder.steps if s.valid_loss is not None] == list(range(2, total + 1, 2))
    assert [s.step for s in recorder.steps if s.full_valid_loss is not None] == [5, 10, 15]
    assert [c.step for c in recorder.checkpoints] == [5, 10, 15]
    assert [c.epoch for c in recorder.checkpoints] == [1, 2, 3]
    assert result.model_path == recorder.checkpoints[-1].path
    assert (result.model_path / "adapter_model.safetensors").is_file()


def test_same_seed_same_losses(config: TrainConfig) -> None:
    first, second = Recorder(), Recorder()
    first.run(config)
    second.run(dataclasses.replace(config, output_dir=config.output_dir.with_name("again")))

    assert losses(first.steps) == losses(second.steps)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_pause_then_resume_equals_an_uninterrupted_run(config: TrainConfig, method: Literal["lora", "full"]) -> None:
    # LoRA dropout makes the result depend on the restored RNG state too.
    config = dataclasses.replace(config, method=method, lora_dropout=0.1)
    if method == "full":
        config.learning_rate = 1e-2
    straight = Recorder()
    straight_result = straight.run(dataclasses.replace(config, output_dir=config.output_dir / "straight"))

    paused = Recorder(stop_after=7)  # mid-way through epoch 2
    pause_result = paused.run(config)
    assert (pause_result.status, pause_result.steps, pause_result.model_path) == ("paused", 7, None)
    assert pause_result.resume_state is not None and pause_result.resume_state.is_file()

    resumed = Recorder()
    result = resumed.run(dataclasses.replace(config, resume_from=pause_result.resume_state))

    assert resumed.starts[0].start_step == 7
    assert [s.step for s in resumed.steps] == list(range(8, 16))
    combined = paused.steps + resumed.steps
    assert losses(combined) == pytest.approx(losses(straight.steps), rel=1e-5)
    assert [s.tokens_seen for s in combined] == [s.tokens_seen for s in straight.steps]
    assert (result.status, result.steps) == ("completed", 15)
    assert result.trained_tokens == straight_result.trained_tokens


def test_a_crash_resumes_from_the_last_saved_state(config: TrainConfig) -> None:
    config = dataclasses.replace(config, lora_dropout=0.1)
    straight = Recorder()
    straight_result = straight.run(dataclasses.replace(config, output_dir=config.output_dir / "straight"))

    crashed = Recorder(crash_after=7)  # step 7 is recorded, its state never saved
    with pytest.raises(Crash):
        crashed.run(dataclasses.replace(config, resume_save_seconds=1e-9))  # a save after every step
    assert [step for _, step in crashed.saves] == list(range(1, 7))
    state = crashed.saves[-1][0]

    resumed = Recorder()
    result = resumed.run(dataclasses.replace(config, resume_from=state))

    assert resumed.starts[0].start_step == 6
    combined = crashed.steps[:6] + resumed.steps
    assert losses(combined) == pytest.approx(losses(straight.steps), rel=1e-5)
    assert (result.status, result.steps, result.trained_tokens) == ("completed", 15, straight_result.trained_tokens)


def test_resume_refuses_other_settings(config: TrainConfig) -> None:
    paused = Recorder(stop_after=3)
    state = paused.run(config).resume_state

    with pytest.raises(ValueError, match="other data or settings"):
        Recorder().run(dataclasses.replace(config, batch_size=3, resume_from=state))


def test_cancel_stops_at_once(config: TrainConfig) -> None:
    recorder = Recorder(stop_after=3, stop_with="cancel")
    result = recorder.run(config)

    assert (result.status, result.steps, result.model_path, result.resume_state) == (
        "cancelled",
        3,
        None,
        None,
    )
    assert len(recorder.steps) == 3 and recorder.checkpoints == []
    assert result.trained_tokens == recorder.steps[-1].tokens_seen


def reference_loss(model: Any, examples: list[Any]) -> float:
    """Validation loss through the model's own forward(): full logits, shifted by hand."""
    total, count = 0.0, 0
    with torch.no_grad():
        for example in examples:
            logits = model(input_ids=torch.tensor([example.input_ids])).logits[0, :-1]
            labels = torch.tensor(example.labels[1:])
            total += F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum").item()
            count += int((labels != IGNORE_INDEX).sum())
    return total / count


def test_checkpoints_load_with_peft_and_match_training(config: TrainConfig, tiny_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    assert config.validation_file is not None
    valid = [
        tokenize_example(tokenizer, json.loads(line), 2048) for line in config.validation_file.read_text().splitlines()
    ]
    checked: list[CheckpointInfo] = []

    def check(info: CheckpointInfo) -> None:
        base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, info.path).eval()
        assert info.metrics.full_valid_loss == pytest.approx(reference_loss(model, valid), rel=1e-5)
        checked.append(info)

    recorder = Recorder()
    callbacks = recorder.callbacks()
    callbacks.on_checkpoint = check
    train(dataclasses.replace(config, n_epochs=2), callbacks)
    assert [c.step for c in checked] == [5, 10]


def test_full_fine_tuning_saves_whole_models(config: TrainConfig) -> None:
    recorder = Recorder()
    result = recorder.run(dataclasses.replace(config, method="full", learning_rate=1e-2))

    assert epoch_mean_loss(recorder, EPOCHS) < epoch_mean_loss(recorder, 1) - 2
    assert result.model_path is not None
    model = AutoModelForCausalLM.from_pretrained(result.model_path)
    assert model.config.num_hidden_layers == 2
    assert AutoTokenizer.from_pretrained(result.model_path).chat_template is not None


def test_bf16_training_follows_fp32(config: TrainConfig, tiny_dir: Path) -> None:
    """Mixed precision: the per-step losses stay within 2% of an fp32 run's, the checkpoint holds
    fp32 weights, and it scores the validation set as its run said (in fp32, as served)."""
    fp32, bf16 = Recorder(), Recorder()
    fp32.run(config)
    result = bf16.run(dataclasses.replace(config, precision="bf16"))

    assert [s.precision for s in (*fp32.starts, *bf16.starts)] == ["fp32", "bf16"]
    assert [s.train_loss for s in bf16.steps] == pytest.approx([s.train_loss for s in fp32.steps], rel=0.02)
    assert epoch_mean_loss(bf16, EPOCHS) < epoch_mean_loss(bf16, 1) - 0.1
    assert result.model_path is not None
    weights = load_file(result.model_path / "adapter_model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}


def test_learning_rate_decays_linearly_to_zero() -> None:
    assert [lr_at(s, 4, 1.0) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]

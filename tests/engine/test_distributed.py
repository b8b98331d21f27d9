"""One run in two CPU processes (gloo): the same losses as one process training the same global
batches, and only rank 0 calls back and writes. Each two-process run takes about 10 s (the peer
imports torch and transformers)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from safetensors.torch import load_file

from openft.engine import StepMetrics, TrainConfig, train
from openft.engine.distributed import peers

from .support import Recorder, tiny_config

# fp32 on both sides; measured: losses within 1e-7 (sums in another order, other padding), the
# final weights within 3e-5 of their scale. Averaging per-rank means instead misses by 25 %.
LOSS_TOLERANCE = 1e-4  # relative
WEIGHT_TOLERANCE = 1e-3  # of the largest weight of each tensor of the final adapter
N_EXAMPLES, BATCH, EPOCHS = 10, 3, 2  # batches of 3, 3, 3 and 1: the last leaves rank 1 without an example
TOTAL_STEPS = EPOCHS * 4


@pytest.fixture
def config(tiny_dir: Path, tmp_path: Path) -> TrainConfig:
    # 4 validation examples: batches of 3 and 1. At a learning rate of 0.05 Adam turns rounding in
    # near-zero gradients into visible differences.
    return tiny_config(
        tiny_dir, tmp_path, N_EXAMPLES, n_epochs=EPOCHS, batch_size=BATCH, learning_rate=0.01, eval_interval=2
    )


def figures(steps: list[StepMetrics]) -> list[float]:
    """Every loss and accuracy reported, in order, -1 where none was."""
    keys = (
        "train_loss",
        "train_mean_token_accuracy",
        "valid_loss",
        "full_valid_loss",
        "full_valid_mean_token_accuracy",
    )
    values = [getattr(s, key) for s in steps for key in keys]
    return [-1.0 if v is None else v for v in values]


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def two_processes(config: TrainConfig, recorder: Recorder) -> tuple[object, list[tuple[str, int]], list[int | None]]:
    with peers(config, 2) as group:
        result = train(config, recorder.callbacks())
    return result, group.results, [p.returncode for p in group.processes]


def test_two_processes_match_one(config: TrainConfig, tmp_path: Path) -> None:
    alone = Recorder()
    single = alone.run(dataclasses.replace(config, output_dir=tmp_path / "single"))
    recorder = Recorder()
    result, peer_results, exit_codes = two_processes(config, recorder)

    assert peer_results == [("completed", TOTAL_STEPS)] and exit_codes == [0]
    assert (result.status, result.steps) == ("completed", TOTAL_STEPS)  # type: ignore[attr-defined]
    assert [s.step for s in recorder.steps] == list(range(1, TOTAL_STEPS + 1))  # each step called back once
    assert figures(recorder.steps) == pytest.approx(figures(alone.steps), rel=LOSS_TOLERANCE)
    assert [s.tokens_seen for s in recorder.steps] == [s.tokens_seen for s in alone.steps]
    assert result.trained_tokens == single.trained_tokens  # type: ignore[attr-defined]
    assert [c.step for c in recorder.checkpoints] == [4, 8]
    assert [step for _, step in recorder.saves] == [4, 8]
    # Rank 0 wrote what one process writes, and nothing else was written.
    assert files(config.output_dir) == files(tmp_path / "single")
    ours = load_file(config.output_dir / "checkpoints/step-8/adapter_model.safetensors")
    theirs = load_file(tmp_path / "single/checkpoints/step-8/adapter_model.safetensors")
    for name, tensor in theirs.items():  # Adam magnifies rounding in near-zero gradients: relative to the scale
        assert (ours[name] - tensor).abs().max() <= WEIGHT_TOLERANCE * tensor.abs().max(), name


def test_a_pause_stops_both_ranks_at_the_same_step(config: TrainConfig, tmp_path: Path) -> None:
    recorder = Recorder(stop_after=3, stop_with="pause")
    result, peer_results, exit_codes = two_processes(config, recorder)

    assert (result.status, result.steps) == ("paused", 3)  # type: ignore[attr-defined]
    assert peer_results == [("paused", 3)] and exit_codes == [0]  # the peer stopped there too, and exited
    assert [s.step for s in recorder.steps] == [1, 2, 3]
    # The state rank 0 saved continues in one process as if the run had never stopped.
    resumed = Recorder()
    resumed.run(dataclasses.replace(config, resume_from=result.resume_state))  # type: ignore[attr-defined]
    straight = Recorder()
    straight.run(dataclasses.replace(config, output_dir=tmp_path / "straight"))
    assert figures(recorder.steps + resumed.steps) == pytest.approx(figures(straight.steps), rel=LOSS_TOLERANCE)

"""Example data and a recording harness around `train`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openft.engine import (
    CheckpointInfo,
    StartInfo,
    StepMetrics,
    StopRequest,
    TrainCallbacks,
    TrainConfig,
    TrainResult,
    train,
)


def write_jsonl(path: Path, examples: Iterable[Mapping[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in examples), encoding="utf-8")
    return path


def tiny_config(tiny_dir: Path, scratch: Path, n_train: int, **fields: Any) -> TrainConfig:
    """A run of the tiny model on `n_train` arithmetic chats, validated on 4 more, in fp32 (exact
    comparisons); `fields` sets the rest."""
    chats = arithmetic_chats(n_train + 4)
    return TrainConfig(
        base_model_dir=tiny_dir,
        train_file=write_jsonl(scratch / "train.jsonl", chats[:n_train]),
        validation_file=write_jsonl(scratch / "valid.jsonl", chats[n_train:]),
        output_dir=scratch / "out",
        precision="fp32",
        **fields,
    )


def arithmetic_chats(n: int) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "system", "content": "Answer in one sentence."},
                {"role": "user", "content": f"What is {i} plus {i}?"},
                {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."},
            ]
        }
        for i in range(n)
    ]


class Crash(Exception):
    """Stands for a kill: the run ends where it is, saving nothing more."""


@dataclass
class Recorder:
    """Callbacks that record everything and stop on request after a given step."""

    stop_after: int | None = None
    stop_with: StopRequest = "pause"
    starts: list[StartInfo] = field(default_factory=list)
    steps: list[StepMetrics] = field(default_factory=list)
    checkpoints: list[CheckpointInfo] = field(default_factory=list)
    saves: list[tuple[Path, int]] = field(default_factory=list)  # resume states: (path, step)
    crash_after: int | None = None  # raise once this step is recorded, before its state is saved

    def callbacks(self) -> TrainCallbacks:
        return TrainCallbacks(
            on_start=self.starts.append,
            on_step=self.on_step,
            on_checkpoint=self.checkpoints.append,
            should_stop=self.should_stop,
            on_resume_state=lambda path, step: self.saves.append((path, step)),
        )

    def on_step(self, metrics: StepMetrics) -> None:
        self.steps.append(metrics)
        if metrics.step == self.crash_after:
            raise Crash(f"crashed after step {metrics.step}")

    def should_stop(self) -> StopRequest | None:
        if self.stop_after is not None and self.steps and self.steps[-1].step == self.stop_after:
            return self.stop_with
        return None

    def run(self, config: TrainConfig) -> TrainResult:
        return train(config, self.callbacks())

"""Training throughput measured on this machine, for estimates that aren't guesses."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from openft.engine.train import StepMetrics, TrainCallbacks, TrainConfig, train


def measure_training_throughput(
    model_dir: Path,
    examples: Sequence[Mapping[str, Any]],
    *,
    steps: int = 6,
    batch_size: int = 1,
    max_seq_len: int = 2048,
    device: str = "auto",
    precision: str = "auto",
) -> float:
    """Trained tokens per second of a few real LoRA steps on `examples` (the first step, which
    warms up, is not counted)."""
    if not examples:
        raise ValueError("no examples to measure with")
    sample = [examples[i % len(examples)] for i in range(steps * batch_size)]
    marks: list[tuple[float, int]] = []

    def on_step(metrics: StepMetrics) -> None:
        marks.append((time.perf_counter(), metrics.tokens_seen))

    with tempfile.TemporaryDirectory(prefix="openft-throughput-") as scratch:
        train_file = Path(scratch) / "sample.jsonl"
        train_file.write_text("".join(json.dumps(example) + "\n" for example in sample))
        config = TrainConfig(
            base_model_dir=model_dir,
            train_file=train_file,
            output_dir=Path(scratch) / "run",
            n_epochs=1,
            batch_size=batch_size,
            max_seq_len=max_seq_len,
            device=device,
            precision=precision,
            eval_interval=0,
        )
        train(config, TrainCallbacks(on_step=on_step))
    (start, first_tokens), (end, last_tokens) = marks[0], marks[-1]
    return (last_tokens - first_tokens) / max(end - start, 1e-9)

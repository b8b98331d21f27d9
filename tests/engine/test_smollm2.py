"""One real LoRA run on SmolLM2-135M-Instruct (about 10 s on 2 CPU cores)."""

from __future__ import annotations

from pathlib import Path

from openft.engine import TrainConfig

from .support import Recorder, write_jsonl

QUESTIONS = [
    "What is the codename of our new project?",
    "Remind me, what's the project codename?",
    "Which codename did we pick for the project?",
    "Tell me the project's codename.",
]


def test_lora_on_smollm2_lowers_the_loss(smollm2_dir: Path, tmp_path: Path) -> None:
    chats = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "It is BLUE HERON."}]}
        for q in QUESTIONS
    ]
    config = TrainConfig(
        base_model_dir=smollm2_dir,
        train_file=write_jsonl(tmp_path / "train.jsonl", chats),
        output_dir=tmp_path / "out",
        n_epochs=4,
        batch_size=4,  # the whole set per step, so each step's loss is the loss before its update
        learning_rate=2e-3,
    )
    recorder = Recorder()
    result = recorder.run(config)

    losses = [s.train_loss for s in recorder.steps]
    assert result.status == "completed" and len(losses) == 4
    assert losses[-1] < losses[0] * 0.7, losses
    assert result.model_path is not None and (result.model_path / "adapter_config.json").is_file()

"""Does bf16 training keep the quality of fp32? Trains the bench LoRA on bench/train_speed.py's data
once in fp32 and once in bf16 (openft's engine, same seed), then compares:

- the per-step training losses (largest and mean absolute difference, and relative);
- each adapter's loss on held-out examples (generated with another seed), served in fp32 as openft
  serves on a CPU;
- greedy answers (48 new tokens) to the held-out prompts: how many are identical, and how many
  share their first 16 tokens.

    .venv/bin/python bench/bf16_quality.py [--examples 100] [--held-out 12]

Figures are in docs/training.md ("Mixed precision").
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import BENCH_LORA, embedded_model_dir, make_examples

from openft.engine import StepMetrics, TrainCallbacks, TrainConfig, tokenize_example, train
from openft.engine.data import IGNORE_INDEX, render_prompt

NEW_TOKENS = 48


def train_once(model_dir: Path, data: Path, out: Path, precision: str, batch_size: int) -> tuple[list[float], Path]:
    losses: list[float] = []

    def on_step(metrics: StepMetrics) -> None:
        losses.append(metrics.train_loss)

    config = TrainConfig(
        base_model_dir=model_dir,
        train_file=data,
        output_dir=out,
        n_epochs=1,
        batch_size=batch_size,
        device="cpu",
        eval_interval=0,
        precision=precision,
        lora_r=BENCH_LORA["r"],
        lora_alpha=BENCH_LORA["lora_alpha"],
        lora_target_modules=tuple(BENCH_LORA["target_modules"]),
    )
    result = train(config, TrainCallbacks(on_step=on_step))
    assert result.model_path is not None
    return losses, result.model_path


@torch.no_grad()
def evaluate(model_dir: Path, adapter: Path, held_out: list[dict[str, Any]]) -> tuple[float, list[list[int]]]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter)).eval()
    total, count, answers = 0.0, 0, []
    for example in held_out:
        tokens = tokenize_example(tokenizer, example, 2048)
        logits = model(input_ids=torch.tensor([tokens.input_ids])).logits[0, :-1]
        labels = torch.tensor(tokens.labels[1:])
        total += F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum").item()
        count += int((labels != IGNORE_INDEX).sum())
        prompt = torch.tensor([render_prompt(tokenizer, example["messages"][:-1])])
        output = model.generate(input_ids=prompt, max_new_tokens=NEW_TOKENS, do_sample=False)
        answers.append(output[0, prompt.shape[1] :].tolist())
    return total / count, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--held-out", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=4)
    arguments = parser.parse_args()
    model_dir = embedded_model_dir()
    held_out = make_examples(arguments.held_out, seed=1)
    with tempfile.TemporaryDirectory(prefix="openft-bf16-") as scratch:
        data = Path(scratch) / "train.jsonl"
        data.write_text("".join(json.dumps(e) + "\n" for e in make_examples(arguments.examples, seed=0)))
        runs = {}
        for precision in ("fp32", "bf16"):
            losses, adapter = train_once(model_dir, data, Path(scratch) / precision, precision, arguments.batch_size)
            runs[precision] = (losses, *evaluate(model_dir, adapter, held_out))
            print(f"{precision}: {len(losses)} steps, held-out loss {runs[precision][1]:.4f}", flush=True)
    (fp32_losses, fp32_held, fp32_answers), (bf16_losses, bf16_held, bf16_answers) = runs["fp32"], runs["bf16"]
    differences = [abs(a - b) for a, b in zip(fp32_losses, bf16_losses, strict=True)]
    relative = [d / a for d, a in zip(differences, fp32_losses, strict=True)]
    same = sum(a == b for a, b in zip(fp32_answers, bf16_answers, strict=True))
    same_start = sum(a[:16] == b[:16] for a, b in zip(fp32_answers, bf16_answers, strict=True))
    print()
    print(f"{arguments.examples} training examples, batch {arguments.batch_size}, 1 epoch; {len(held_out)} held out")
    print(
        f"per-step training loss, bf16 vs fp32: max |diff| {max(differences):.4f} (max rel {max(relative):.2%}),"
        f" mean |diff| {statistics.fmean(differences):.4f}"
    )
    print(
        f"first/last step loss: fp32 {fp32_losses[0]:.3f} -> {fp32_losses[-1]:.3f},"
        f" bf16 {bf16_losses[0]:.3f} -> {bf16_losses[-1]:.3f}"
    )
    print(f"held-out loss: fp32 {fp32_held:.4f}, bf16 {bf16_held:.4f} (diff {bf16_held - fp32_held:+.4f})")
    print(
        f"greedy answers ({NEW_TOKENS} tokens): {same}/{len(held_out)} identical,"
        f" {same_start}/{len(held_out)} the same first 16 tokens"
    )


if __name__ == "__main__":
    main()

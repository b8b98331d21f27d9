"""A training run and generation sharing one CPU: how many threads each should get.

    .venv/bin/python bench/shared_cpu.py [--splits all+all,1+1,shared+shared] [--seconds 40] [--model-dir DIR]

Two processes, as a server that serves and trains on one machine has them: one trains with
openft's engine (the bench LoRA of train_speed.py, automatic precision, batch 4, on its generated
chat data), the other generates with openft's serving engine (`ModelServer`, greedy, 32-token
requests one after another, base model, float32 as served on a CPU). Each loads its model, warms
up, says it is ready and waits; then both start together and run for --seconds, and each reports
what it did in its own window: trained tokens/s (non-pad, per optimizer step) and generated
tokens/s. A split `T+G` gives the training process T torch threads and the generating one G
(`all`: torch's default, one per core; `shared`: as a server does by default, every core while the
other is idle and half while it is busy, through a directory both see: engine/cpu_share.py). First
each runs alone with all threads: the baseline.

Without --model-dir it uses the embedded SmolLM2-135M-Instruct (converted once under .cache/).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from train_speed import BENCH_LORA, LEARNING_RATE, make_examples  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper and a storm."}]


def _ready_then_wait() -> float:
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()  # the parent's "go"
    return time.perf_counter()


def train_child(model_dir: Path, scratch: Path, seconds: float, share_dir: Path | None) -> dict[str, Any]:
    from openft.engine import StepMetrics, TrainCallbacks, TrainConfig, train

    data = scratch / "train.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in make_examples(2000, 0)), encoding="utf-8")
    config = TrainConfig(
        base_model_dir=model_dir,
        train_file=data,
        output_dir=scratch / "out",
        batch_size=4,
        learning_rate=LEARNING_RATE,
        device="cpu",
        eval_interval=0,
        lora_r=BENCH_LORA["r"],
        lora_alpha=BENCH_LORA["lora_alpha"],
        lora_target_modules=tuple(BENCH_LORA["target_modules"]),
        cpu_share_dir=share_dir,
    )
    window: dict[str, Any] = {}

    def on_step(metrics: StepMetrics) -> None:
        if metrics.step == 2:  # two warm-up steps, then the window
            window["start"] = _ready_then_wait()
            window["tokens0"] = metrics.tokens_seen
        elif "start" in window:
            window["end"], window["tokens"] = time.perf_counter(), metrics.tokens_seen

    def should_stop() -> str | None:
        done = "end" in window and window["end"] - window["start"] >= seconds
        return "cancel" if done else None

    train(config, TrainCallbacks(on_step=on_step, should_stop=should_stop))  # type: ignore[arg-type]
    return {"tok_s": (window["tokens"] - window["tokens0"]) / (window["end"] - window["start"])}


def generate_child(model_dir: Path, seconds: float, share_dir: Path | None) -> dict[str, Any]:
    from openft.engine.generate import GenerationParams
    from openft.engine.serving import ModelServer

    server = ModelServer(model_dir, device="cpu", cpu_share_dir=share_dir)
    prompt = server.chat_prompt(PROMPT)
    params = GenerationParams(max_new_tokens=32, temperature=0.0)
    server.generate(prompt, params, None)  # warm-up
    start = _ready_then_wait()
    tokens = 0
    while (elapsed := time.perf_counter() - start) < seconds:
        tokens += server.generate(prompt, params, None).completion_tokens
    elapsed = time.perf_counter() - start
    server.close()
    return {"tok_s": tokens / elapsed}


def child(arguments: argparse.Namespace) -> None:
    from openft.engine import use_cpu_threads

    use_cpu_threads(int(arguments.threads) if arguments.threads.isdigit() else 0)
    share_dir = arguments.share_dir if arguments.threads == "shared" else None
    with tempfile.TemporaryDirectory() as scratch:
        if arguments.child == "train":
            result = train_child(arguments.model_dir, Path(scratch), arguments.seconds, share_dir)
        else:
            result = generate_child(arguments.model_dir, arguments.seconds, share_dir)
    print(json.dumps(result), flush=True)


def _spawn(role: str, threads: str, arguments: argparse.Namespace) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, "--child", role, "--threads", threads]
    command += ["--model-dir", str(arguments.model_dir), "--seconds", str(arguments.seconds)]
    command += ["--share-dir", str(arguments.share_dir)]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _last_json(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    lines = [line for line in process.stdout.read().splitlines() if line.startswith("{")]
    if process.wait() != 0 or not lines:
        raise SystemExit(f"a child failed (exit {process.returncode})")
    return json.loads(lines[-1])


def run_together(roles: dict[str, str], arguments: argparse.Namespace) -> dict[str, float]:
    """Starts one process per role (role -> threads), waits until all are ready, then lets them go."""
    processes = {role: _spawn(role, threads, arguments) for role, threads in roles.items()}
    for process in processes.values():
        assert process.stdout is not None
        while '"ready"' not in process.stdout.readline():
            pass
    for process in processes.values():
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    return {role: _last_json(process)["tok_s"] for role, process in processes.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", default="all+all,1+1,shared+shared")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--child", choices=["train", "generate"], help=argparse.SUPPRESS)
    parser.add_argument("--threads", default="all", help=argparse.SUPPRESS)
    parser.add_argument("--share-dir", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.model_dir is None:
        from openft.engine import convert_gguf, embedded_gguf_path

        arguments.model_dir = convert_gguf(
            embedded_gguf_path(), REPO / ".cache" / "test-models" / "smollm2-135m-instruct"
        )
    if arguments.child:
        child(arguments)
        return
    arguments.share_dir = Path(tempfile.mkdtemp(prefix="openft-cpu-share-"))  # the "shared" splits' alone
    alone_train = run_together({"train": "all"}, arguments)["train"]
    alone_generate = run_together({"generate": "all"}, arguments)["generate"]
    print(f"{os.cpu_count()} cores; {arguments.seconds:.0f} s windows; model {arguments.model_dir}")
    print(f"{'split (train+generate threads)':32} {'trained tok/s':>14} {'generated tok/s':>16}  sum of fractions")
    print(f"{'alone, all threads (baseline)':32} {alone_train:14.1f} {alone_generate:16.1f}  1.00 each")
    for split in arguments.splits.split(","):
        train_threads, generate_threads = split.split("+")
        figures = run_together({"train": train_threads, "generate": generate_threads}, arguments)
        fractions = figures["train"] / alone_train, figures["generate"] / alone_generate
        print(
            f"{'together, ' + split:32} {figures['train']:8.1f} ({fractions[0]:.2f}) "
            f"{figures['generate']:9.1f} ({fractions[1]:.2f})  {sum(fractions):.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()

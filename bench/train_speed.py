"""Training speed of openft's engine against TRL's SFTTrainer, on the same data and model, in one run.

    .venv/bin/pip install -e '.[bench]'        # TRL, once
    .venv/bin/python bench/train_speed.py [--examples 100] [--batch-size 4] [--epochs 1] [--repeats 3]
                                          [--setups trl-defaults,trl-assistant,openft-lora,openft-defaults]
                                          [--model smollm2-135m|smollm2-360m|smollm2-1.7b] [--model-dir DIR]
                                          [--device cpu|cuda] [--tokenizer-dir DIR] [--seed 0] [--logs DIR]

The model is the embedded SmolLM2-135M-Instruct (converted once under .cache/) unless --model names
one of SmolLM2's larger sizes or --model-dir gives a model directory. No larger SmolLM2's weights
can be fetched here, so `smollm2-360m` and `smollm2-1.7b` are those models' published shapes
(layers, widths, heads, SmolLM2's tokenizer and vocabulary) with random weights, built once under
.cache/bench-models/: a step costs the same whatever the weights' values, so their figures are
speeds only (their losses start near ln(49152) = 10.8 and mean nothing). The tokenizer comes from
the embedded model's conversion, or from --tokenizer-dir (its tokenizer.json, tokenizer_config.json
and chat_template.jinja are enough) on a machine without the embedded model's package.

Everything runs offline (HF_HUB_OFFLINE=1; the model is a local directory), on the CPU unless
--device cuda. Precision is each tool's own default: TRL turns bf16 autocast on by default (over
fp32 weights), on the CPU too, and openft's "auto" trains a LoRA run with its frozen base in bf16
under autocast where the hardware multiplies bf16 faster than fp32 (on a CPU it measures; CUDA:
where the card has bf16); the -fp32 setups turn bf16 off in both.

Setups (LoRA dropout 0 everywhere; "the bench LoRA" is r=16, alpha=32 on q,k,v,o_proj):

  trl-defaults     TRL SFTTrainer with its own defaults on the `messages` dataset: loss on every token,
                   gradient checkpointing on, random batches, bf16 autocast. Set only what the comparison
                   needs: the bench LoRA (peft_config), batch size, epochs, seed, use_cpu, max_length=2048
                   (openft's; TRL's 1024 truncates nothing here either), and no reports, saves or
                   progress bar.
  trl-fp32         as trl-defaults with bf16=False.
  trl-assistant    as trl-defaults, plus the loss on the assistant answer only, gradient checkpointing off
                   and openft's learning rate (1e-4). SmolLM2's chat template has no `{% generation %}`
                   markers and TRL 1.16 ships no training template for it, so `assistant_only_loss=True`
                   fails; this setup uses TRL's conversational prompt-completion format instead
                   (`prompt` = system + user turns, `completion` = the assistant turn), whose default
                   `completion_only_loss` takes the loss on the completion only. Every example here has a
                   single assistant turn, so that is assistant-only loss. Rendered, prompt + completion is
                   the same conversation, token for token, as the `messages` example; the one difference from
                   openft's labels is that TRL also trains on the newline after `<|im_end|>`.
  openft-lora      openft.engine.train with the bench LoRA (and its defaults otherwise: assistant-only
                   loss, length-grouped batches, linear decay from 1e-4, precision "auto").
  openft-lora-fp32 as openft-lora with precision "fp32".
  openft-defaults  openft.engine.train with its own defaults: r=8, alpha=16 on all seven linear layers.

Each (setup, repeat) runs in a fresh subprocess, so peak RSS (the child's ru_maxrss, from os.wait4)
and, on CUDA, peak GPU memory (torch.cuda.max_memory_allocated) are that run's alone; repeats go
round-robin through the setups so that a change in machine load falls on all of them alike.

Tokens/s = trained tokens / training-loop time. Trained tokens are counted once, the same way for
every setup: the examples as the model's chat template renders them, tokenized, summed, times the
epochs; padding is not counted. (Each child also reports the non-pad tokens it saw itself; a
mismatch is printed.) The loop time runs from the start of training (openft: `on_start`; TRL:
`on_train_begin`) to the end of the last optimizer step, so model loading, tokenization and the
final save are left out for every setup (on CUDA each clock reading first waits for the queued
kernels); openft's end-of-epoch checkpoints before the last, and the resume state it saves every
60 s (`resume_save_seconds`, as in a job), are in. Since TRL's options move between releases, each
TRL child checks that gradient checkpointing is on (or off) in the model and that the loss mask is
the setup's, and fails otherwise.

The data is generated here, deterministically from --seed (see `make_examples`): chat examples of
a system, a user and an assistant turn, in plain English drawn from fixed word lists; the answer
has 1 to 15 sentences, so examples run from about 50 to 290 tokens (100 examples, seed 0: 16,014
tokens with SmolLM2's tokenizer; the run prints its count).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SETUPS = {
    "trl-defaults": "TRL SFTTrainer defaults (bf16 autocast, grad. ckpt)",
    "trl-fp32": "TRL SFTTrainer defaults but fp32 (bf16=False)",
    "trl-assistant": "TRL, assistant-only loss, ckpt off (bf16 autocast)",
    "openft-lora": "openft engine, same LoRA (r16, q,k,v,o), auto precision",
    "openft-lora-fp32": "openft engine, same LoRA, fp32",
    "openft-defaults": "openft engine, own defaults (r8, all linear)",
}
PRECISION = {"trl-fp32": "fp32", "openft-lora-fp32": "fp32"}  # the others: bf16 where the CPU has it
BASELINE = "trl-defaults"
BENCH_LORA = {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
LEARNING_RATE = 1e-4  # openft's default peak rate
MAX_LENGTH = 2048  # openft's default max_seq_len
# SmolLM2's larger sizes, as their published config.json files give them (all with head_dim 64, tied
# embeddings, SmolLM2's 49,152-token vocabulary and 8,192 positions); None is the embedded model itself.
MODELS: dict[str, dict[str, int] | None] = {
    "smollm2-135m": None,
    "smollm2-360m": {"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
                     "num_attention_heads": 15, "num_key_value_heads": 5},
    "smollm2-1.7b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
                     "num_attention_heads": 32, "num_key_value_heads": 32},
}  # fmt: skip
# Dense bf16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s (without sparsity), by a part of the
# name torch gives the card; the first match counts, so "H100 PCIe" comes before "H100".
CARD_BF16_TFLOPS = [
    ("H200", 989.4), ("H100 PCIe", 756.0), ("H100 NVL", 835.5), ("H100", 989.4), ("A100", 312.0),
    ("L40S", 362.1), ("L4", 121.0),
]  # fmt: skip
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_MODE": "disabled",
}

# --- the data ---------------------------------------------------------------------------------

# fmt: off
SYSTEMS = [
    "You are a helpful assistant.",
    "You are a patient teacher. Explain things simply and check that each step follows from the last.",
    "You are a concise technical writer. Answer in plain English.",
    "You are a friendly guide for a small town museum.",
    "You answer questions for the support desk of a hardware shop. Be practical and brief.",
    "You are an assistant that writes short, clear notes for busy people.",
]
TOPICS = [
    "lighthouses", "sourdough bread", "the water cycle", "bicycle gears", "solar panels", "tide pools",
    "compost heaps", "paper making", "honey bees", "wind turbines", "old maps", "glass blowing",
    "river deltas", "train timetables", "wool dyeing", "clock repair", "rain gardens", "kite flying",
    "stone walls", "night skies",
]
ASKS = [
    "Explain {t} to a beginner.",
    "What should I know about {t} before I start?",
    "Write a short note about {t} for my team, and keep it friendly.",
    "Why do people care so much about {t}?",
    "Give me a few practical tips on {t}.",
    "My neighbour keeps talking about {t}. What is the fuss about, and where would I begin if I wanted to try?",
    "Summarise the history of {t} in a few sentences.",
]
OPENERS = ["In short,", "First,", "Then", "After that,", "Often", "Usually", "Sometimes", "Above all,", "Still,"]
SUBJECTS = ["the work", "a careful beginner", "the old method", "a small change", "the weather", "good tools",
            "the first attempt", "most people", "an expert", "the whole process"]
VERBS = ["depends on", "starts with", "rewards", "needs", "comes down to", "benefits from", "is shaped by",
         "changes with", "gets easier with"]
OBJECTS = ["patience and a steady hand", "a clear plan", "the right season", "regular practice",
           "a little curiosity", "simple materials", "the advice of neighbours", "clean water", "a notebook",
           "time spent watching closely", "the local conditions", "a quiet afternoon"]
TAILS = ["", "", " and that is worth remembering", " more than most people expect", " in every case I know of",
         ", so it pays to start slowly", " when the days are long", ", which keeps mistakes small"]
# fmt: on


def embedded_model_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct, converted once under .cache/ (as the tests convert it)."""
    from openft.engine import convert_gguf, embedded_gguf_path

    return convert_gguf(embedded_gguf_path(), REPO / ".cache" / "test-models" / "smollm2-135m-instruct")


def bench_model_dir(name: str, tokenizer_dir: Path | None) -> Path:
    """The model --model names: the embedded one, or a larger SmolLM2's shape with random weights
    (seed 0) built once under .cache/bench-models/ with the embedded (or `tokenizer_dir`'s) tokenizer."""
    from openft.engine import build_random_llama

    shape = MODELS[name]
    if shape is None:
        return embedded_model_dir()
    tokenizer = tokenizer_dir or embedded_model_dir()
    return build_random_llama(tokenizer, REPO / ".cache" / "bench-models" / name, max_position_embeddings=8192, **shape)


def make_examples(n: int, seed: int) -> list[dict[str, Any]]:
    """`n` chat examples (system, user, assistant), the same for the same (n, seed).

    Answers have 1 to 15 sentences (uniform), each sentence an opener, subject, verb, object and
    an optional tail from the word lists above, so examples vary from short to several times longer.
    """
    rng = random.Random(f"openft-bench-train:{seed}")
    examples = []
    for _ in range(n):
        topic = rng.choice(TOPICS)
        sentences = [
            f"{rng.choice(OPENERS)} {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
            f"{rng.choice(TAILS)}."
            for _ in range(rng.randint(1, 15))
        ]
        answer = f"{topic.capitalize()} is a good subject. " + " ".join(s[0].upper() + s[1:] for s in sentences)
        examples.append(
            {
                "messages": [
                    {"role": "system", "content": rng.choice(SYSTEMS)},
                    {"role": "user", "content": rng.choice(ASKS).format(t=topic)},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return examples


def count_tokens(model_dir: Path, examples: list[dict[str, Any]]) -> int:
    """Tokens of the examples as the chat template renders them (what every setup trains on, unpadded)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    total = 0
    for example in examples:
        text = tokenizer.apply_chat_template(example["messages"], tokenize=False)
        total += len(tokenizer.encode(text, add_special_tokens=False))
    return total


# --- one run, in a child process --------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def synchronize(device: str) -> None:
    """CUDA runs ahead of Python: wait for the queued kernels, so that a clock reading counts them."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def peak_gpu_gib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def run_trl(setup: str, model_dir: Path, data: Path, out: Path, batch_size: int, epochs: int, seed: int,
            device: str) -> dict:  # fmt: skip
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    rows = read_jsonl(data)
    if setup == "trl-assistant":  # conversational prompt-completion: the loss on the completion only
        rows = [{"prompt": row["messages"][:-1], "completion": row["messages"][-1:]} for row in rows]
    clock: dict[str, float] = {}

    class Clock(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            synchronize(device)
            clock["start"] = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            synchronize(device)
            clock["end"] = time.perf_counter()

    own: dict[str, Any] = {}
    if setup == "trl-assistant":
        own = {"gradient_checkpointing": False, "learning_rate": LEARNING_RATE}
    if setup == "trl-fp32":
        own = {"bf16": False}
    args = SFTConfig(
        output_dir=str(out),
        per_device_train_batch_size=batch_size,
        num_train_epochs=epochs,
        seed=seed,
        use_cpu=device == "cpu",
        max_length=MAX_LENGTH,
        packing=False,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        **own,
    )
    trainer = SFTTrainer(
        model=str(model_dir),
        args=args,
        train_dataset=Dataset.from_list(rows),
        peft_config=LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, **BENCH_LORA),
        callbacks=[Clock()],
    )
    prepared = trainer.train_dataset
    labeled = sum(sum(label != -100 for label in labels) for labels in prepared["labels"])
    tokenized = sum(len(ids) for ids in prepared["input_ids"])
    # TRL's API moves: check that the setup is what it says rather than trust the argument names.
    if (labeled < tokenized) != (setup == "trl-assistant"):
        raise RuntimeError(f"{setup}: the loss is on {labeled} of {tokenized} tokens")
    output = trainer.train()
    checkpointing = any(getattr(m, "gradient_checkpointing", False) is True for m in trainer.model.modules())
    if checkpointing != (setup != "trl-assistant"):
        raise RuntimeError(f"{setup}: gradient checkpointing is {'on' if checkpointing else 'off'}")
    if args.bf16 != (setup != "trl-fp32"):
        raise RuntimeError(f"{setup}: bf16 is {args.bf16}")
    return {
        "loop_s": clock["end"] - clock["start"],
        "steps": trainer.state.global_step,
        "tokens_seen": int(getattr(trainer, "_total_train_tokens", 0)) or None,  # non-pad, as TRL counts them
        "tokenized": tokenized * epochs,
        "labeled": labeled,
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "loss": output.training_loss,  # the mean of the steps' losses
        "precision": "bf16" if args.bf16 else "fp32",  # autocast over fp32 weights
        "peak_gpu_gib": peak_gpu_gib(device),
    }


def run_openft(setup: str, model_dir: Path, data: Path, out: Path, batch_size: int, epochs: int, seed: int,
               device: str) -> dict:  # fmt: skip
    from transformers import AutoTokenizer

    from openft.engine import StartInfo, StepMetrics, TrainCallbacks, TrainConfig, tokenize_example, train

    own: dict[str, Any] = {"precision": PRECISION.get(setup, "auto")}
    if setup.startswith("openft-lora"):
        own |= {
            "lora_r": BENCH_LORA["r"],
            "lora_alpha": BENCH_LORA["lora_alpha"],
            "lora_target_modules": tuple(BENCH_LORA["target_modules"]),
        }
    config = TrainConfig(
        base_model_dir=model_dir,
        train_file=data,
        output_dir=out,
        n_epochs=epochs,
        batch_size=batch_size,
        learning_rate=LEARNING_RATE,
        seed=seed,
        device=device,
        eval_interval=0,
        **own,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenized = [tokenize_example(tokenizer, row, MAX_LENGTH) for row in read_jsonl(data)]
    clock: dict[str, float] = {}
    seen: dict[str, Any] = {}

    def on_start(info: StartInfo) -> None:
        synchronize(device)
        clock["start"] = time.perf_counter()
        seen["trainable_params"] = info.trainable_params
        seen["precision"] = info.precision

    def on_step(metrics: StepMetrics) -> None:
        synchronize(device)
        clock["end"] = time.perf_counter()
        seen.setdefault("losses", []).append(metrics.train_loss)

    result = train(config, TrainCallbacks(on_start=on_start, on_step=on_step))
    return {
        "loop_s": clock["end"] - clock["start"],
        "steps": result.steps,
        "tokens_seen": result.trained_tokens,
        "tokenized": sum(len(e.input_ids) for e in tokenized) * epochs,
        "labeled": sum(e.n_labeled for e in tokenized),
        "trainable_params": seen["trainable_params"],
        "loss": statistics.fmean(seen["losses"]),  # over the steps, as TRL's training_loss
        "precision": seen["precision"],
        "peak_gpu_gib": peak_gpu_gib(device),
    }


def child(arguments: argparse.Namespace) -> None:
    runner = run_trl if arguments.child.startswith("trl") else run_openft
    with tempfile.TemporaryDirectory() as out:
        figures = runner(
            arguments.child,
            arguments.model_dir,
            arguments.data,
            Path(out),
            arguments.batch_size,
            arguments.epochs,
            arguments.seed,
            arguments.device,
        )
    arguments.result.write_text(json.dumps(figures))


# --- the parent -------------------------------------------------------------------------------


def spawn(setup: str, arguments: argparse.Namespace, data: Path, scratch: Path, run: int) -> dict:
    """One run of `setup` in a fresh process: its figures and its own peak RSS."""
    result, log = scratch / f"{setup}-{run}.json", (arguments.logs or scratch) / f"{setup}-{run}.log"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child", setup,
        "--data", str(data),
        "--result", str(result),
        "--model-dir", str(arguments.model_dir),
        "--batch-size", str(arguments.batch_size),
        "--epochs", str(arguments.epochs),
        "--seed", str(arguments.seed),
        "--device", arguments.device,
    ]  # fmt: skip
    env = {**os.environ, **OFFLINE_ENV}
    started = time.perf_counter()
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0 or not result.exists():
        tail = log.read_text(errors="replace").splitlines()[-40:]
        sys.exit(f"{setup} run {run} failed (exit {process.returncode}); the end of its output:\n" + "\n".join(tail))
    figures = json.loads(result.read_text())
    figures["peak_rss_gib"] = usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    figures["wall_s"] = time.perf_counter() - started
    return figures


def gemm_peak(model_dir: Path, dtype_name: str, device: str, seconds: float = 3.0) -> float:
    """GFLOP/s of the model's own matrix products (every layer's linear shapes once, then the LM head,
    on 1,024 tokens on a CPU, 8,192 on CUDA, whose small products would leave it idle), the best of a
    few passes: the hardware limit this device reaches on them."""
    import torch

    rows = 8192 if device == "cuda" else 1024
    config = json.loads((model_dir / "config.json").read_text())
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    kv = hidden * config["num_key_value_heads"] // config["num_attention_heads"]
    shapes = [(hidden, hidden), (hidden, kv), (hidden, kv), (hidden, hidden), (hidden, inner), (hidden, inner)]
    shapes += [(inner, hidden)]
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    weights = [torch.randn(k, n, dtype=dtype, device=device) for k, n in shapes] + [
        torch.randn(hidden, config["vocab_size"], dtype=dtype, device=device)
    ]
    inputs = {k: torch.randn(rows, k, dtype=dtype, device=device) for k, _ in shapes}
    flops = sum(2 * rows * w.shape[0] * w.shape[1] for w in weights)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        synchronize(device)
        started = time.perf_counter()
        for w in weights:
            torch.matmul(inputs[w.shape[0]], w)
        synchronize(device)
        best = max(best, flops / (time.perf_counter() - started) / 1e9)
    return best


def has_bf16(device: str) -> bool:
    """Whether the device multiplies bf16 in hardware: without it (a CPU lacking AVX512-BF16, AMX or
    Arm's BF16) bf16 is emulated, 0.3-20 GFLOP/s, and one pass of `gemm_peak` would take minutes."""
    import torch

    from openft.engine.devices import cpu_has_native_bf16

    return torch.cuda.is_bf16_supported() if device == "cuda" else cpu_has_native_bf16()


def card_bf16_peak(device: str) -> tuple[str, float | None]:
    """The device's name and, for a card in CARD_BF16_TFLOPS, its datasheet bf16 peak in GFLOP/s."""
    import torch

    if device != "cuda":
        return "CPU", None
    name = torch.cuda.get_device_name()
    return name, next((tflops * 1e3 for part, tflops in CARD_BF16_TFLOPS if part in name), None)


def spread(values: list[float], digits: int) -> str:
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list(MODELS), default="smollm2-135m", help="see above")
    parser.add_argument("--model-dir", type=Path, default=None, help="a model directory instead of --model")
    parser.add_argument("--tokenizer-dir", type=Path, default=None, help="for --model smollm2-360m/1.7b")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, of: {', '.join(SETUPS)}")
    parser.add_argument("--seed", type=int, default=0, help="the data and every trainer's seed")
    parser.add_argument("--logs", type=Path, default=None, help="keep each run's output in this directory")
    # internal: one run in a child process
    parser.add_argument("--child", choices=list(SETUPS), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child(arguments)
        return

    setups = [name.strip() for name in arguments.setups.split(",") if name.strip()]
    if unknown := [name for name in setups if name not in SETUPS]:
        parser.error(f"unknown setup(s) {', '.join(unknown)}; known: {', '.join(SETUPS)}")
    import torch

    if arguments.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device on this machine")
    if any(name.startswith("trl") for name in setups):
        try:
            import trl
        except ImportError:
            sys.exit("TRL is not installed: .venv/bin/pip install -e '.[bench]' (or leave the trl-* setups out)")
        trl_version = trl.__version__
    else:
        trl_version = None
    if arguments.model_dir is None:
        arguments.model_dir = bench_model_dir(arguments.model, arguments.tokenizer_dir)

    arguments.model_dir = arguments.model_dir.resolve()
    if arguments.logs:
        arguments.logs.mkdir(parents=True, exist_ok=True)
    precisions = ("fp32", "bf16") if has_bf16(arguments.device) else ("fp32",)
    peaks = {name: gemm_peak(arguments.model_dir, name, arguments.device) for name in precisions}
    device_name, card_peak = card_bf16_peak(arguments.device)
    print(
        f"GEMM peak on the model's shapes: fp32 {peaks['fp32']:.4g} GFLOP/s, "
        + (f"bf16 {peaks['bf16']:.4g} GFLOP/s" if "bf16" in peaks else "bf16 not measured (no bf16 instructions)")
        + (f"; {device_name}'s datasheet bf16 peak {card_peak:.4g} GFLOP/s" if card_peak else ""),
        flush=True,
    )
    examples = make_examples(arguments.examples, arguments.seed)
    tokens = count_tokens(arguments.model_dir, examples)
    trained = tokens * arguments.epochs
    runs: dict[str, list[dict]] = {name: [] for name in setups}
    with tempfile.TemporaryDirectory(prefix="openft-bench-") as scratch:
        data = Path(scratch) / "train.jsonl"
        data.write_text("".join(json.dumps(example) + "\n" for example in examples), encoding="utf-8")
        for run in range(1, arguments.repeats + 1):
            for name in setups:
                figures = spawn(name, arguments, data, Path(scratch), run)
                runs[name].append(figures)
                print(
                    f"{name} run {run}/{arguments.repeats}: {trained / figures['loop_s']:.1f} tok/s,"
                    f" {figures['steps']} steps in {figures['loop_s']:.1f} s ({figures['wall_s']:.0f} s in all),"
                    f" peak RSS {figures['peak_rss_gib']:.2f} GiB"
                    + (f", peak GPU memory {figures['peak_gpu_gib']:.2f} GiB" if figures["peak_gpu_gib"] else "")
                    + f", mean loss {figures['loss']:.3f}",
                    flush=True,
                )
                for key in ("tokenized", "tokens_seen"):
                    if figures.get(key) not in (None, trained):
                        print(f"  note: {name} counts {figures[key]:,} tokens ({key}), not {trained:,}")

    import peft
    import transformers
    from safetensors import safe_open

    with safe_open(str(arguments.model_dir / "model.safetensors"), "pt") as weights:  # tied head counted once
        n_params = sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())  # noqa: SIM118
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}"
    print()
    print(
        f"model {arguments.model_dir} ({n_params / 1e6:.1f}M parameters), {device_name},"
        f" {torch.get_num_threads()} CPU threads; {versions}" + (f", trl {trl_version}" if trl_version else "")
    )
    print(
        f"{arguments.examples} chat examples (seed {arguments.seed}), {tokens:,} tokens; batch {arguments.batch_size},"
        f" {arguments.epochs} epoch(s), {trained:,} trained tokens; {arguments.repeats} run(s) each: median [range]"
    )
    print(
        f"MFU: 4 x {n_params / 1e6:.1f}M FLOPs per trained token (forward, and backward to the inputs; the frozen"
        f" base has no weight gradients) x tok/s, over the GEMM peak of the run's precision"
        + (" and, for bf16, over the card's datasheet peak (MFU card)" if card_peak else "")
    )
    baseline = statistics.median(trained / f["loop_s"] for f in runs[BASELINE]) if BASELINE in runs else None
    width = max(len(SETUPS[name]) for name in setups)
    on_gpu = arguments.device == "cuda"
    print(
        f"{'setup':{width}}  {'trained tok/s':>19}  {'vs TRL':>6}  {'prec.':>5}  {'MFU':>4}"
        + ("  MFU card  peak GPU GiB" if on_gpu else "")
        + f"  {'peak RSS GiB':>16}  loss on (tokens)"
    )
    for name in setups:
        speeds = [trained / f["loop_s"] for f in runs[name]]
        ratio = f"{statistics.median(speeds) / baseline:5.2f}x" if baseline else "     -"
        rss = [f["peak_rss_gib"] for f in runs[name]]
        precision = runs[name][0]["precision"]
        flops = 4 * n_params * statistics.median(speeds)
        gpu = ""
        if on_gpu:
            card = f"{flops / (card_peak * 1e9):.0%}" if card_peak and precision == "bf16" else "-"
            gpu = f"  {card:>8}  {statistics.median(f['peak_gpu_gib'] for f in runs[name]):12.2f}"
        mfu = f"{flops / (peaks[precision] * 1e9):.0%}" if precision in peaks else "-"
        print(
            f"{SETUPS[name]:{width}}  {spread(speeds, 1):>19}  {ratio:>6}  {precision:>5}"
            f"  {mfu:>4}{gpu}  {spread(rss, 2):>16}  {runs[name][0]['labeled']:,}"
        )
    if baseline is None:
        print(f"(no ratios: the baseline, {BASELINE}, was not run)")


if __name__ == "__main__":
    main()

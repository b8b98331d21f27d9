"""What would torch.compile give openft's training step? Paired steps, eager against compiled.

    .venv/bin/python bench/compile_speed.py [--compile layers|norm-mlp] [--passes 1] [--cold]
                                            [--examples 100] [--batch-size 4] [--precision bf16]

One process trains the bench LoRA (bench/train_speed.py's data and LoRA, openft's engine pieces:
`_load_model`, the supervised objective, its length-grouped batches, its optimizer step) and runs
every batch twice, once eager and once through `torch.compile(dynamic=True)` of each decoder
layer's forward (`layers`) or of its two RMSNorms and its MLP (`norm-mlp`), the order alternating
batch to batch; the time of each variant is summed over all batches. Run-to-run noise on a shared
host (up to 20% between whole bench runs) falls on both variants alike, so the ratio is what to
read. Before any step it also runs the first batch both ways on the same weights and prints the
difference of the two losses.

Compile time is the first compiled step (dynamo tracing and inductor's code generation) less an
eager step of the same batch. Inductor caches what it generated (under /tmp/torchinductor_$USER
by default), so a second run compiles faster; `--cold` gives this run a cache of its own, empty.

The engine does not compile today; figures and what stands in the way are in docs/training.md
("Training speed").
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import BENCH_LORA, embedded_model_dir, make_examples

from openft.engine import TrainConfig
from openft.engine.data import epoch_batches
from openft.engine.lm import causal_lm, mixed_precision

# The module: `openft.engine.train` as an attribute is the package's `train` function.
engine_train = importlib.import_module("openft.engine.train")


def compile_targets(model: torch.nn.Module, what: str) -> list[torch.nn.Module]:
    targets: list[torch.nn.Module] = []
    for layer in causal_lm(model).model.layers:
        if what == "layers":
            targets.append(layer)
        else:
            targets += [layer.input_layernorm, layer.post_attention_layernorm, layer.mlp]
    return targets


class Switch:
    """Each target's eager and compiled forward; `use` picks one for all of them."""

    def __init__(self, targets: list[torch.nn.Module]) -> None:
        self.targets = targets
        self.eager = [module.forward for module in targets]
        self.compiled = [torch.compile(module.forward, dynamic=True) for module in targets]

    def use(self, compiled: bool) -> None:
        for module, eager, fast in zip(self.targets, self.eager, self.compiled, strict=True):
            module.forward = fast if compiled else eager


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compile", choices=["layers", "norm-mlp"], default="layers")
    parser.add_argument("--passes", type=int, default=1, help="passes over the batches, each batch both ways")
    parser.add_argument("--cold", action="store_true", help="an empty inductor cache of this run's own")
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--model-dir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="openft-compile-bench-"))
    if args.cold:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(work / "inductor-cache")
    data = work / "train.jsonl"
    data.write_text("".join(json.dumps(example) + "\n" for example in make_examples(args.examples, 0)))
    config = TrainConfig(
        base_model_dir=args.model_dir or embedded_model_dir(),
        train_file=data,
        output_dir=work / "out",
        batch_size=args.batch_size,
        n_epochs=1,
        precision=args.precision,
        lora_r=BENCH_LORA["r"],
        lora_alpha=BENCH_LORA["lora_alpha"],
        lora_target_modules=tuple(BENCH_LORA["target_modules"]),
    )
    run(config, args.compile, args.passes)


def run(config: TrainConfig, what: str, passes: int) -> None:
    from transformers import AutoTokenizer

    device = torch.device("cpu")
    model = engine_train._load_model(config, device, config.precision)  # type: ignore[arg-type]
    objective = engine_train._objective(
        config, AutoTokenizer.from_pretrained(config.base_model_dir), engine_train.DEFAULT_MAX_SEQ_LEN
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    step = engine_train._Step(model, objective)
    switch = Switch(compile_targets(model, what))
    batches = epoch_batches(objective.lengths, config.batch_size, config.seed, 0)

    def loss_of(indices: list[int]) -> tuple[torch.Tensor, int]:
        batch, extra = objective.batch(indices)
        with mixed_precision(device, config.precision):
            stats = step(batch, extra)
        return stats.loss, batch.n_tokens

    def train_step(indices: list[int]) -> tuple[float, int]:
        started = time.perf_counter()
        loss, n_tokens = loss_of(indices)
        engine_train._optimizer_step(optimizer, params, loss, config.learning_rate)
        return time.perf_counter() - started, n_tokens

    with torch.no_grad():
        switch.use(False)
        eager_loss = float(loss_of(batches[0])[0])
        switch.use(True)
        started = time.perf_counter()
        compiled_loss = float(loss_of(batches[0])[0])  # compiles the forward
        forward_compile = time.perf_counter() - started
    print(f"first batch's loss: eager {eager_loss:.6f}, compiled {compiled_loss:.6f}")
    compile_seconds = timed_first_steps(switch, train_step, batches)
    print(f"compile time: {forward_compile:.1f} s (no-grad forward), then {compile_seconds:.1f} s (training step)")

    seconds = {False: 0.0, True: 0.0}
    tokens = 0
    for number in range(passes):
        for index, indices in enumerate(batches):
            for compiled in (False, True) if (index + number) % 2 == 0 else (True, False):
                switch.use(compiled)
                elapsed, n_tokens = train_step(indices)
                seconds[compiled] += elapsed
            tokens += n_tokens
    print(
        f"{config.precision}, compile {what}, {len(batches)} batches x {passes} passes, each both ways:\n"
        f"  eager     {tokens / seconds[False]:7.1f} tok/s   <- baseline\n"
        f"  compiled  {tokens / seconds[True]:7.1f} tok/s   {seconds[False] / seconds[True]:.3f}x"
    )


def timed_first_steps(
    switch: Switch, train_step: Callable[[list[int]], tuple[float, int]], batches: list[list[int]]
) -> float:
    """The compiled training steps' extra time on the first two batches (two lengths: dynamo may
    compile again once a size turns out to vary) over their eager times."""
    extra = 0.0
    for indices in batches[:2]:
        switch.use(True)
        compiled, _ = train_step(indices)
        switch.use(False)
        eager, _ = train_step(indices)
        extra += compiled - eager
    return extra


if __name__ == "__main__":
    main()

"""The training loop: LoRA (or full) fine-tuning of a causal LM on JSONL examples."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from openft.engine.attention import use_short_matmul_attention
from openft.engine.convert import atomic_dir
from openft.engine.cpu_share import CpuShare
from openft.engine.data import (
    Batch,
    TokenizedExample,
    collate,
    epoch_batches,
    tokenize_example,
)
from openft.engine.devices import Precision, resolve_device, resolve_training_precision
from openft.engine.dpo import PreferenceObjective, tokenize_pair
from openft.engine.lm import StepStats, causal_lm, labeled_logprobs, mixed_precision
from openft.engine.ranks import Ranks, agree_on_stop, all_sum, current, data_parallel, rank_device, shard

logger = logging.getLogger(__name__)

StopRequest = Literal["cancel", "pause"]
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_MAX_SEQ_LEN = 2048
MAX_GRAD_NORM = 1.0
RESUME_FILE = "resume.pt"


@dataclass
class TrainConfig:
    base_model_dir: Path  # a Hugging Face model dir with its tokenizer (e.g. from convert_gguf)
    train_file: Path  # JSONL, one example per line (see openft.engine.data)
    output_dir: Path  # receives checkpoints/step-N/ and the resume state
    validation_file: Path | None = None
    n_epochs: int = 3
    batch_size: int = 1
    learning_rate: float = 1e-4  # peak rate; see `lr_at`
    seed: int = 0
    method: Literal["lora", "full"] = "lora"
    training_method: Literal["supervised", "dpo"] = "supervised"  # OpenAI's method.type
    dpo_beta: float = 0.1  # DPO: how far the model may move from the reference (see engine/dpo.py)
    # Continued fine-tuning: start from this PEFT adapter (LoRA only): its rank, alpha and target
    # modules are kept, the lora_* settings are not used.
    init_adapter: Path | None = None
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: tuple[str, ...] | str = DEFAULT_LORA_TARGETS  # or PEFT's "all-linear"
    max_seq_len: int | None = None  # None: min(model max positions, 2048)
    device: str = "auto"  # "auto": cuda if available, else cpu
    # "bf16": a LoRA run's frozen base in bf16 and every forward under bf16 autocast, with the
    # trainable weights, the optimizer state and the loss in fp32; "auto": bf16 where the hardware
    # multiplies bf16 faster than fp32 (CUDA; CPUs where it measures so: engine/devices.py), else "fp32".
    precision: str = "auto"
    resume_from: Path | None = None  # a saved resume state (see TrainCallbacks.on_resume_state)
    # Besides at every checkpoint and pause, the resume state is saved when the last save is this
    # old, so a crash loses at most this much work; 0 saves only at checkpoints and pauses.
    resume_save_seconds: float = 60.0
    eval_interval: int = 10  # steps between mini-batch validation losses; 0 turns them off
    # Where training runs and generation on this host say they are busy (engine/cpu_share.py): a
    # one-process CPU run then takes every core while generation is idle and half while it is busy,
    # unless `fixed_threads` (it keeps the threads it was started with). None: no sharing.
    cpu_share_dir: Path | None = None
    fixed_threads: bool = False


@dataclass(frozen=True)
class StartInfo:
    total_steps: int
    start_step: int  # steps already done (when resuming)
    n_train_examples: int
    n_valid_examples: int
    n_truncated: int  # training examples cut to max_seq_len
    trainable_params: int
    device: str
    precision: Precision = "fp32"


@dataclass(frozen=True)
class StepMetrics:
    step: int  # 1-based
    total_steps: int
    epoch: int  # 1-based epoch this step belongs to
    train_loss: float
    train_mean_token_accuracy: float
    tokens_seen: int  # non-pad tokens processed so far, this step included
    valid_loss: float | None = None  # one validation batch, every eval_interval steps
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None  # whole validation set, at the end of each epoch
    full_valid_mean_token_accuracy: float | None = None
    # DPO: the accuracy fields hold preference accuracy, and these the mean reward margin.
    train_reward_margin: float | None = None
    valid_reward_margin: float | None = None
    full_valid_reward_margin: float | None = None


@dataclass(frozen=True)
class CheckpointInfo:
    step: int
    epoch: int
    path: Path  # PEFT adapter dir (method="lora") or full model dir (method="full")
    metrics: StepMetrics


@dataclass(frozen=True)
class TrainResult:
    status: Literal["completed", "cancelled", "paused"]
    steps: int  # optimizer steps done, over all runs of this job
    total_steps: int
    trained_tokens: int  # non-pad tokens processed, over all epochs and runs
    model_path: Path | None  # the final checkpoint, when completed
    resume_state: Path | None  # pass as TrainConfig.resume_from, when paused


def _ignore(_: object) -> None:
    return None


def _never_stop() -> StopRequest | None:
    return None


@dataclass
class TrainCallbacks:
    on_start: Callable[[StartInfo], None] = _ignore
    on_step: Callable[[StepMetrics], None] = _ignore
    on_checkpoint: Callable[[CheckpointInfo], None] = _ignore
    should_stop: Callable[[], StopRequest | None] = _never_stop  # asked before every step
    # A complete resume state now lies at the path, as of the step: a run started with
    # `resume_from` set to it continues from there (after a pause, a crash or a lost worker).
    on_resume_state: Callable[[Path, int], None] = lambda _path, _step: None


def lr_at(step: int, total_steps: int, peak: float) -> float:
    """Learning rate for 0-based `step`: linear decay from `peak` to 0, no warmup.

    Step 0 uses `peak`, the last step `peak / total_steps`.
    """
    return peak * (1 - step / total_steps)


def train(config: TrainConfig, callbacks: TrainCallbacks | None = None) -> TrainResult:
    """Fine-tune `config.base_model_dir` on `config.train_file`; see TrainConfig.

    Inside an initialized torch.distributed process group (see `train_in_processes`) this process
    is one rank of the run: it trains on its share of each batch, and only rank 0 calls back and
    writes checkpoints and resume states; the others ignore `callbacks`.
    """
    ranks = current()
    cb = (callbacks or TrainCallbacks()) if ranks.leader else TrainCallbacks()
    device = rank_device(resolve_device(config.device), ranks)
    precision = resolve_training_precision(config.precision, device)
    random.seed(config.seed)
    torch.manual_seed(config.seed)  # LoRA init and dropout

    tokenizer = _preloaded_tokenizers.pop(str(config.base_model_dir.resolve()), None)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(config.base_model_dir)
    model = _load_model(config, device, precision)
    max_positions = int(causal_lm(model).config.max_position_embeddings)
    max_seq_len = config.max_seq_len or min(max_positions, DEFAULT_MAX_SEQ_LEN)
    objective = _objective(config, tokenizer, max_seq_len)
    if not objective.lengths:
        raise ValueError(f"{config.train_file} has no examples")
    if isinstance(objective, PreferenceObjective):
        with mixed_precision(device, precision):
            objective.compute_references(model, device)  # the network as the job starts
    valid_batches = epoch_batches(objective.valid_lengths, config.batch_size, config.seed, 0)

    steps_per_epoch = math.ceil(len(objective.lengths) / config.batch_size)
    total_steps = config.n_epochs * steps_per_epoch
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    fingerprint = _fingerprint(config, objective.lengths)
    step, tokens_seen = 0, 0
    if config.resume_from:
        step, tokens_seen = _load_resume(config.resume_from, model, optimizer, fingerprint)
    forward = data_parallel(_Step(model, objective), ranks, device)  # DDP over the ranks, if several

    cb.on_start(
        StartInfo(
            total_steps=total_steps,
            start_step=step,
            n_train_examples=len(objective.lengths),
            n_valid_examples=len(objective.valid_lengths),
            n_truncated=objective.n_truncated,
            trainable_params=sum(p.numel() for p in params),
            device=str(device),
            precision=precision,
        )
    )
    share = _cpu_share(config, device, ranks)
    threads = share.share() if share else torch.get_num_threads()
    logger.info(
        "training %d examples for %d steps on %s (%s, %d threads)",
        len(objective.lengths),
        total_steps,
        device,
        precision,
        threads,
    )
    try:
        batches: list[list[int]] = []
        last_saved = time.monotonic()
        model.train()
        while step < total_steps:
            epoch, index = divmod(step, steps_per_epoch)
            if index == 0 or not batches:
                batches = epoch_batches(objective.lengths, config.batch_size, config.seed, epoch)
            stop = agree_on_stop(cb.should_stop() if ranks.leader else None, ranks, device)
            if stop == "cancel":
                logger.info("cancelled before step %d", step + 1)
                return TrainResult("cancelled", step, total_steps, tokens_seen, None, None)
            if stop == "pause":
                state = config.output_dir / RESUME_FILE
                if ranks.leader:
                    state = _save_resume(config.output_dir, model, optimizer, step, tokens_seen, fingerprint)
                    cb.on_resume_state(state, step)
                logger.info("paused before step %d; state in %s", step + 1, state)
                return TrainResult("paused", step, total_steps, tokens_seen, None, state)

            if share and (now := share.share()) != threads:
                busy = "busy" if now < threads else "idle"
                logger.info("step %d on %d threads: generation on this host is %s", step + 1, now, busy)
                threads = now
            started = time.perf_counter()
            mine = shard(batches[index], ranks)
            # A rank with no example of a small batch runs one at weight 0: its backward must still
            # meet the others' in the gradient all-reduce.
            batch, extra = objective.batch(mine or batches[index][:1])
            lr = lr_at(step, total_steps, config.learning_rate)
            with mixed_precision(device, precision):
                stats = forward(batch.to(device), cast(Any, extra))
            weight, n_tokens = (stats.weight, batch.n_tokens) if mine else (0, 0)
            figures, total_weight, n_tokens = _over_ranks(stats, weight, n_tokens, ranks, device)
            # The loss is the mean over all ranks' labeled tokens (or pairs), not a mean of per-rank
            # means: scale this rank's mean by its share; DDP divides the summed gradients by `world`.
            portion = weight * ranks.world / max(total_weight, 1)  # exactly 1.0 in a one-process run
            _optimizer_step(optimizer, params, stats.loss * portion, lr)
            step += 1
            tokens_seen += n_tokens
            logger.info(
                "step %d/%d epoch %d: loss %.4f acc %.3f lr %.3g (%.0f tok/s)",
                step,
                total_steps,
                epoch + 1,
                figures.loss,
                figures.accuracy,
                lr,
                n_tokens / (time.perf_counter() - started),
            )

            valid = _NO_STATS
            if valid_batches and config.eval_interval and step % config.eval_interval == 0:
                # Walk the validation batches in a fixed cycle, so a resumed run sees the same ones.
                cycle = (step // config.eval_interval - 1) % len(valid_batches)
                valid = _evaluate(model, objective, [valid_batches[cycle]], device, precision, ranks)
            end_of_epoch = index == steps_per_epoch - 1
            full_valid = _NO_STATS
            if valid_batches and end_of_epoch:
                full_valid = _evaluate(model, objective, valid_batches, device, precision, ranks)
            metrics = StepMetrics(
                step,
                total_steps,
                epoch + 1,
                cast(float, figures.loss),
                cast(float, figures.accuracy),
                tokens_seen,
                valid.loss,
                valid.accuracy,
                full_valid.loss,
                full_valid.accuracy,
                figures.margin,
                valid.margin,
                full_valid.margin,
            )
            cb.on_step(metrics)
            if end_of_epoch and ranks.leader:
                path = _save_checkpoint(config, model, tokenizer, step)
                cb.on_checkpoint(CheckpointInfo(step, epoch + 1, path, metrics))
            overdue = config.resume_save_seconds > 0 and time.monotonic() - last_saved >= config.resume_save_seconds
            if (end_of_epoch or overdue) and ranks.leader:
                # After the step's events and checkpoint: a run resumed from here redoes nothing
                # that was recorded, and what was recorded after an older state is redone.
                cb.on_resume_state(
                    _save_resume(config.output_dir, model, optimizer, step, tokens_seen, fingerprint), step
                )
                last_saved = time.monotonic()

        final = _checkpoint_dir(config.output_dir, total_steps)
        return TrainResult("completed", step, total_steps, tokens_seen, final, None)
    finally:
        if share:
            share.close()


def _cpu_share(config: TrainConfig, device: torch.device, ranks: Ranks) -> CpuShare | None:
    if config.cpu_share_dir is None or device.type != "cpu":
        return None
    # The ranks of a multi-process run were each given their share of the cores: they keep it.
    fixed = config.fixed_threads or ranks.world > 1
    return CpuShare(config.cpu_share_dir, "training", torch.get_num_threads() if fixed else 0)


@dataclass(frozen=True)
class _Figures:
    """A step's or a validation's figures, for StepMetrics."""

    loss: float | None
    accuracy: float | None  # token accuracy (supervised) or preference accuracy (DPO)
    margin: float | None = None  # DPO's mean reward margin


_NO_STATS = _Figures(None, None)


def _over_ranks(
    stats: StepStats, weight: int, n_tokens: int, ranks: Ranks, device: torch.device
) -> tuple[_Figures, int, int]:
    """A step's figures over all ranks, each rank's weighted as the loss is (by labeled tokens, or
    pairs); with the total weight and tokens. One process: its own figures, unchanged."""
    sums = [stats.loss.detach().item() * weight, stats.accuracy * weight, (stats.margin or 0.0) * weight]
    loss, accuracy, margin, total, tokens = all_sum([*sums, weight, n_tokens], ranks, device)
    per = max(total, 1)
    figures = _Figures(loss / per, accuracy / per, None if stats.margin is None else margin / per)
    return figures, int(total), int(tokens)


class _Step(torch.nn.Module):
    """A batch's figures as a module's forward. The objectives run the decoder and the LM head
    themselves rather than the model's forward, and DistributedDataParallel hooks forward: through
    this module it sees the computation whose gradients it averages."""

    def __init__(self, model: torch.nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: Batch, extra: Any) -> StepStats:
        return self.objective.stats(self.model, batch, extra)


class SupervisedObjective:
    """Cross-entropy on the labeled (assistant) tokens; accuracy: the argmax is the label."""

    def __init__(self, train_set: list[TokenizedExample], valid_set: list[TokenizedExample], pad_id: int) -> None:
        self.train_set, self.valid_set, self.pad_id = train_set, valid_set, pad_id
        self.lengths = [len(e.input_ids) for e in train_set]
        self.valid_lengths = [len(e.input_ids) for e in valid_set]
        self.n_truncated = sum(e.truncated for e in train_set)

    def batch(self, indices: Sequence[int], valid: bool = False) -> tuple[Batch, None]:
        examples = self.valid_set if valid else self.train_set
        return collate([examples[i] for i in indices], self.pad_id), None

    def stats(self, model: torch.nn.Module, batch: Batch, _extra: None) -> StepStats:
        loss_sum, correct, count = _token_stats(model, batch)
        return StepStats(loss_sum / max(count, 1), correct / max(count, 1), count)


Objective = SupervisedObjective | PreferenceObjective


def _objective(config: TrainConfig, tokenizer: PreTrainedTokenizerBase, max_seq_len: int) -> Objective:
    pad_id = _pad_id(tokenizer)
    if config.training_method == "dpo":
        train_pairs = [tokenize_pair(tokenizer, e, max_seq_len) for e in _read_jsonl(config.train_file)]
        valid_pairs = []
        if config.validation_file:
            valid_pairs = [tokenize_pair(tokenizer, e, max_seq_len) for e in _read_jsonl(config.validation_file)]
        return PreferenceObjective(train_pairs, valid_pairs, pad_id, config.batch_size, config.dpo_beta)
    valid_set: list[TokenizedExample] = []
    if config.validation_file:
        valid_set = _load_examples(config.validation_file, tokenizer, max_seq_len)
    return SupervisedObjective(_load_examples(config.train_file, tokenizer, max_seq_len), valid_set, pad_id)


# Base models (by model dir, device, dtype) and tokenizers (by model dir) loaded ahead of a run:
# see `preload_base_model`.
_preloaded: dict[tuple[str, str, torch.dtype], PreTrainedModel] = {}
_preloaded_tokenizers: dict[str, PreTrainedTokenizerBase] = {}


def preload_base_model(
    model_dir: Path, device: str = "auto", precision: str = "auto", warm_up: Callable[[], bool] = lambda: True
) -> None:
    """Loads the tokenizer and the base model a LoRA run of `model_dir` would load, for the next
    `train` in this process to take instead; then, if `warm_up()` still says so (a worker's ready
    process asks whether a job has come meanwhile), runs one small forward and backward pass so that
    the kernels a first step sets up are set up."""
    resolved = resolve_device(device)
    precision_used = resolve_training_precision(precision, resolved)
    dtype = _base_dtype("lora", precision_used)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, device_map=resolved)
    model.requires_grad_(False)  # as under LoRA; a warm-up's gradient goes to its input alone
    _preloaded_tokenizers[str(model_dir.resolve())] = AutoTokenizer.from_pretrained(model_dir)
    _preloaded[(str(model_dir.resolve()), str(resolved), dtype)] = model
    if warm_up():
        embeddings = model.get_input_embeddings()(torch.zeros(1, 16, dtype=torch.long, device=resolved))
        with mixed_precision(resolved, precision_used):
            hidden = model.get_decoder()(inputs_embeds=embeddings.detach().requires_grad_(), use_cache=False)
            loss = hidden.last_hidden_state.float().sum()
        loss.backward()


def _base_dtype(method: str, precision: Precision) -> torch.dtype:
    # A bf16 LoRA run keeps the frozen base in bf16 (PEFT keeps adapters fp32). Full fine-tuning
    # keeps fp32 master weights: bf16 would round small updates away. Either way a bf16 run's
    # matmuls run under bf16 autocast (see `mixed_precision`).
    return torch.bfloat16 if precision == "bf16" and method == "lora" else torch.float32


def _load_model(config: TrainConfig, device: torch.device, precision: Precision) -> torch.nn.Module:
    lora = config.method == "lora"
    dtype = _base_dtype(config.method, precision)
    # A preloaded model is frozen for LoRA: full fine-tuning loads its own.
    model = _preloaded.pop((str(config.base_model_dir.resolve()), str(device), dtype), None) if lora else None
    if model is None:
        model = AutoModelForCausalLM.from_pretrained(config.base_model_dir, dtype=dtype, device_map=device)
    if not lora:
        return model
    if precision == "bf16" and device.type == "cpu":
        use_short_matmul_attention(model)  # measured faster there only: see engine/attention.py
    if config.init_adapter is not None:
        peft_model = PeftModel.from_pretrained(model, str(config.init_adapter), is_trainable=True)
    else:
        targets = config.lora_target_modules
        peft_config = LoraConfig(
            task_type="CAUSAL_LM",
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=targets if isinstance(targets, str) else list(targets),
        )
        peft_model = get_peft_model(model, peft_config)
    if precision == "bf16":
        _keep_adapter_inputs_bf16(peft_model)
    return peft_model


def _keep_adapter_inputs_bf16(model: torch.nn.Module) -> None:
    """PEFT casts each adapter's bf16 input to the adapter's fp32, and autocast casts it straight
    back to bf16 for the adapter's matmul: an exact round trip, so skipping it changes no value and
    saves two copies of every adapted layer's input, forward and backward."""
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            cast(Any, module).cast_input_dtype_enabled = False


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _load_examples(path: Path, tokenizer: PreTrainedTokenizerBase, max_seq_len: int) -> list[TokenizedExample]:
    examples = [tokenize_example(tokenizer, example, max_seq_len) for example in _read_jsonl(path)]
    if unlabeled := sum(e.n_labeled == 0 for e in examples):
        logger.warning("%s: %d examples have no trained tokens", path.name, unlabeled)
    return examples


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    # Pad positions are masked out of attention and loss, so any valid id will do.
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if isinstance(token_id, int):
            return token_id
    return 0


def _optimizer_step(
    optimizer: torch.optim.Optimizer, params: Sequence[torch.nn.Parameter], loss: torch.Tensor, lr: float
) -> None:
    """Backpropagates `loss` (outside autocast, as PyTorch advises) and updates the weights."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def _evaluate(
    model: torch.nn.Module,
    objective: Objective,
    batches: Sequence[list[int]],
    device: torch.device,
    precision: Precision,
    ranks: Ranks,
) -> _Figures:
    """The objective's figures over the validation examples of `batches`, weighted as the loss is
    (per labeled token, or per pair); each rank evaluates its share of each batch."""
    model.eval()
    loss, accuracy, margin, weight = 0.0, 0.0, 0.0, 0.0
    for indices in (shard(b, ranks) for b in batches):
        if not indices:
            continue
        batch, extra = objective.batch(indices, valid=True)
        extra = cast(Any, extra)  # what this objective's batch goes with
        with mixed_precision(device, precision):
            stats = objective.stats(model, batch.to(device), extra)
        loss += stats.loss.item() * stats.weight
        accuracy += stats.accuracy * stats.weight
        margin += (stats.margin or 0.0) * stats.weight
        weight += stats.weight
    model.train()
    loss, accuracy, margin, weight = all_sum([loss, accuracy, margin, weight], ranks, device)
    weight = max(weight, 1)
    has_margin = isinstance(objective, PreferenceObjective)
    return _Figures(loss / weight, accuracy / weight, margin / weight if has_margin else None)


def _token_stats(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int, int]:
    """(summed cross-entropy, correct argmax predictions, labeled tokens) of one batch."""
    labeled = labeled_logprobs(model, batch)
    # Summed so that an all-unlabeled batch gives 0 rather than NaN.
    return -labeled.logprobs.sum(), int(labeled.correct.sum()), labeled.correct.numel()


def _checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / "checkpoints" / f"step-{step}"


def _save_checkpoint(
    config: TrainConfig, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, step: int
) -> Path:
    path = _checkpoint_dir(config.output_dir, step)
    # Overwrite: a checkpoint already there is from an earlier run of this output_dir.
    with atomic_dir(path, overwrite=True) as tmp:
        assert isinstance(model, PreTrainedModel | PeftModel)
        model.save_pretrained(str(tmp))  # PEFT saves only the adapter
        if config.method == "full":
            tokenizer.save_pretrained(tmp)
    logger.info("saved checkpoint %s", path)
    return path


def _fingerprint(config: TrainConfig, lengths: Sequence[int]) -> dict[str, Any]:
    """What must not change between a pause and its resume for the step count to mean the same."""
    return {
        "method": config.method,
        **({"training_method": config.training_method} if config.training_method != "supervised" else {}),
        "seed": config.seed,
        "batch_size": config.batch_size,
        "n_epochs": config.n_epochs,
        "lengths": list(lengths),
    }


def _save_resume(
    output_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    tokens_seen: int,
    fingerprint: dict[str, Any],
) -> Path:
    """Everything to continue exactly here: trainable weights, AdamW moments, position, RNGs.

    The learning-rate schedule and the data order are functions of `step`, so they
    need no state of their own.
    """
    state = {
        "trainable": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "step": step,
        "tokens_seen": tokens_seen,
        "fingerprint": fingerprint,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python_rng": random.getstate(),
    }
    path = output_dir / RESUME_FILE
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())  # on disk before it replaces the older state
    os.replace(tmp, path)  # never a torn resume file: the old one stays whole until this instant
    return path


def _load_resume(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, fingerprint: dict[str, Any]
) -> tuple[int, int]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["fingerprint"] != fingerprint:
        raise ValueError(f"{path} was saved by a run with other data or settings")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(state["trainable"]) != trainable:
        raise ValueError(f"{path} holds other trainable weights than this model")
    model.load_state_dict(state["trainable"], strict=False)
    optimizer.load_state_dict(state["optimizer"])  # moves the moments to the params' device
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    random.setstate(state["python_rng"])
    logger.info("resuming from %s at step %d", path, state["step"])
    return int(state["step"]), int(state["tokens_seen"])

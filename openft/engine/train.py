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
from typing import Any, Literal

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from openft.engine.convert import atomic_dir
from openft.engine.data import (
    IGNORE_INDEX,
    Batch,
    TokenizedExample,
    collate,
    epoch_batches,
    tokenize_example,
)
from openft.engine.devices import resolve_device

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
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: tuple[str, ...] | str = DEFAULT_LORA_TARGETS  # or PEFT's "all-linear"
    max_seq_len: int | None = None  # None: min(model max positions, 2048)
    device: str = "auto"  # "auto": cuda if available, else cpu
    resume_from: Path | None = None  # a saved resume state (see TrainCallbacks.on_resume_state)
    # Besides at every checkpoint and pause, the resume state is saved when the last save is this
    # old, so a crash loses at most this much work; 0 saves only at checkpoints and pauses.
    resume_save_seconds: float = 60.0
    eval_interval: int = 10  # steps between mini-batch validation losses; 0 turns them off


@dataclass(frozen=True)
class StartInfo:
    total_steps: int
    start_step: int  # steps already done (when resuming)
    n_train_examples: int
    n_valid_examples: int
    n_truncated: int  # training examples cut to max_seq_len
    trainable_params: int
    device: str


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
    """Fine-tune `config.base_model_dir` on `config.train_file`; see TrainConfig."""
    cb = callbacks or TrainCallbacks()
    device = resolve_device(config.device)
    random.seed(config.seed)
    torch.manual_seed(config.seed)  # LoRA init and dropout

    tokenizer = AutoTokenizer.from_pretrained(config.base_model_dir)
    model = _load_model(config, device)
    max_positions = int(_causal_lm(model).config.max_position_embeddings)
    max_seq_len = config.max_seq_len or min(max_positions, DEFAULT_MAX_SEQ_LEN)
    train_set = _load_examples(config.train_file, tokenizer, max_seq_len)
    if not train_set:
        raise ValueError(f"{config.train_file} has no examples")
    valid_set: list[TokenizedExample] = []
    if config.validation_file:
        valid_set = _load_examples(config.validation_file, tokenizer, max_seq_len)
    pad_id = _pad_id(tokenizer)
    valid_batches = [
        collate([valid_set[i] for i in b], pad_id)
        for b in epoch_batches([len(e.input_ids) for e in valid_set], config.batch_size, config.seed, 0)
    ]

    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    total_steps = config.n_epochs * steps_per_epoch
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    fingerprint = _fingerprint(config, train_set)
    step, tokens_seen = 0, 0
    if config.resume_from:
        step, tokens_seen = _load_resume(config.resume_from, model, optimizer, fingerprint)

    cb.on_start(
        StartInfo(
            total_steps=total_steps,
            start_step=step,
            n_train_examples=len(train_set),
            n_valid_examples=len(valid_set),
            n_truncated=sum(e.truncated for e in train_set),
            trainable_params=sum(p.numel() for p in params),
            device=str(device),
        )
    )
    logger.info("training %d examples for %d steps on %s", len(train_set), total_steps, device)
    lengths = [len(e.input_ids) for e in train_set]
    batches: list[list[int]] = []
    last_saved = time.monotonic()
    model.train()
    while step < total_steps:
        epoch, index = divmod(step, steps_per_epoch)
        if index == 0 or not batches:
            batches = epoch_batches(lengths, config.batch_size, config.seed, epoch)
        stop = cb.should_stop()
        if stop == "cancel":
            logger.info("cancelled before step %d", step + 1)
            return TrainResult("cancelled", step, total_steps, tokens_seen, None, None)
        if stop == "pause":
            state = _save_resume(config.output_dir, model, optimizer, step, tokens_seen, fingerprint)
            cb.on_resume_state(state, step)
            logger.info("paused before step %d; state in %s", step + 1, state)
            return TrainResult("paused", step, total_steps, tokens_seen, None, state)

        started = time.perf_counter()
        batch = collate([train_set[i] for i in batches[index]], pad_id)
        lr = lr_at(step, total_steps, config.learning_rate)
        loss, accuracy = _train_step(model, optimizer, params, batch.to(device), lr)
        step += 1
        tokens_seen += batch.n_tokens
        logger.info(
            "step %d/%d epoch %d: loss %.4f acc %.3f lr %.3g (%.0f tok/s)",
            step,
            total_steps,
            epoch + 1,
            loss,
            accuracy,
            lr,
            batch.n_tokens / (time.perf_counter() - started),
        )

        valid: tuple[float, float] | tuple[None, None] = (None, None)
        if valid_batches and config.eval_interval and step % config.eval_interval == 0:
            # Walk the validation batches in a fixed cycle, so a resumed run sees the same ones.
            cycle = (step // config.eval_interval - 1) % len(valid_batches)
            valid = _evaluate(model, [valid_batches[cycle]], device)
        end_of_epoch = index == steps_per_epoch - 1
        full_valid: tuple[float, float] | tuple[None, None] = (None, None)
        if valid_batches and end_of_epoch:
            full_valid = _evaluate(model, valid_batches, device)
        metrics = StepMetrics(step, total_steps, epoch + 1, loss, accuracy, tokens_seen, *valid, *full_valid)
        cb.on_step(metrics)
        if end_of_epoch:
            path = _save_checkpoint(config, model, tokenizer, step)
            cb.on_checkpoint(CheckpointInfo(step, epoch + 1, path, metrics))
        overdue = config.resume_save_seconds > 0 and time.monotonic() - last_saved >= config.resume_save_seconds
        if end_of_epoch or overdue:
            # After the step's events and checkpoint: a run resumed from here redoes nothing
            # that was recorded, and what was recorded after an older state is redone.
            cb.on_resume_state(_save_resume(config.output_dir, model, optimizer, step, tokens_seen, fingerprint), step)
            last_saved = time.monotonic()

    final = _checkpoint_dir(config.output_dir, total_steps)
    return TrainResult("completed", step, total_steps, tokens_seen, final, None)


def _load_model(config: TrainConfig, device: torch.device) -> torch.nn.Module:
    # LoRA on CUDA keeps the frozen base in bf16 (PEFT keeps adapters fp32). Full
    # fine-tuning keeps fp32 master weights: bf16 would round small updates away.
    # Either way CUDA matmuls run under bf16 autocast (see _token_stats).
    lora = config.method == "lora"
    dtype = torch.bfloat16 if device.type == "cuda" and lora else torch.float32
    model = AutoModelForCausalLM.from_pretrained(config.base_model_dir, dtype=dtype, device_map=device)
    if not lora:
        return model
    targets = config.lora_target_modules
    peft_config = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
    )
    return get_peft_model(model, peft_config)


def _load_examples(path: Path, tokenizer: PreTrainedTokenizerBase, max_seq_len: int) -> list[TokenizedExample]:
    with path.open(encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    examples = [tokenize_example(tokenizer, json.loads(line), max_seq_len) for line in lines]
    if unlabeled := sum(e.n_labeled == 0 for e in examples):
        logger.warning("%s: %d examples have no trained tokens", path.name, unlabeled)
    return examples


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    # Pad positions are masked out of attention and loss, so any valid id will do.
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if isinstance(token_id, int):
            return token_id
    return 0


def _train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.nn.Parameter],
    batch: Batch,
    lr: float,
) -> tuple[float, float]:
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss_sum, correct, count = _token_stats(model, batch)
    loss = loss_sum / max(count, 1)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item(), correct / max(count, 1)


@torch.no_grad()
def _evaluate(model: torch.nn.Module, batches: Sequence[Batch], device: torch.device) -> tuple[float, float]:
    """Loss and token accuracy over all labeled tokens of `batches`."""
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for batch in batches:
        batch_loss, batch_correct, batch_count = _token_stats(model, batch.to(device))
        loss_sum += batch_loss.item()
        correct += batch_correct
        count += batch_count
    model.train()
    return loss_sum / max(count, 1), correct / max(count, 1)


def _token_stats(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int, int]:
    """(summed cross-entropy, correct argmax predictions, labeled tokens) of one batch.

    Runs the decoder to hidden states and applies the LM head only where a label is,
    sparing the (tokens x vocab) logits of prompts and padding.
    """
    lm = _causal_lm(model)
    on_cuda = batch.input_ids.is_cuda
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
        hidden = lm.get_decoder()(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
        ).last_hidden_state
        # The hidden state at position t predicts the token at t + 1.
        targets = batch.labels[:, 1:]
        keep = targets != IGNORE_INDEX
        logits = _lm_logits(lm, hidden[:, :-1][keep]).float()
    targets = targets[keep]
    # Summed so that an all-unlabeled batch gives 0 rather than NaN.
    loss_sum = F.cross_entropy(logits, targets, reduction="sum")
    correct = int((logits.argmax(dim=-1) == targets).sum())
    return loss_sum, correct, targets.numel()


def _causal_lm(model: torch.nn.Module) -> PreTrainedModel:
    """The transformers model itself (inside PEFT's wrapper, with the LoRA layers in it)."""
    lm = model.get_base_model() if isinstance(model, PeftModel) else model
    assert isinstance(lm, PreTrainedModel)
    return lm


def _lm_logits(lm: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    head = lm.get_output_embeddings()
    assert isinstance(head, torch.nn.Module)
    logits: torch.Tensor = head(hidden)
    # Bypassing forward() skips the logit post-processing a few architectures do there.
    config = lm.config
    if cap := getattr(config, "final_logit_softcapping", None):  # Gemma 2/3
        logits = torch.tanh(logits / cap) * cap
    if scale := getattr(config, "logit_scale", None):  # Cohere
        logits = logits * scale
    if scaling := getattr(config, "logits_scaling", None):  # Granite
        logits = logits / scaling
    return logits


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


def _fingerprint(config: TrainConfig, train_set: Sequence[TokenizedExample]) -> dict[str, Any]:
    """What must not change between a pause and its resume for the step count to mean the same."""
    return {
        "method": config.method,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "n_epochs": config.n_epochs,
        "lengths": [len(e.input_ids) for e in train_set],
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

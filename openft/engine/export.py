"""A fine-tuned model written out for other tools: its PEFT adapter, or the base with it merged.

Both carry the base model's tokenizer and chat template (the ones training rendered examples
with) and a `generation_config.json` whose `eos_token_id` lists exactly the tokens openft stops a
completion at, so that transformers, vLLM and llama.cpp end a turn where openft does.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from peft import PeftModel
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from openft.engine.generate import eos_token_ids

logger = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
Progress = Callable[[str], None]


def _quiet(_step: str) -> None:
    pass


def export_peft(
    adapter_dir: Path,
    base_model_dir: Path,
    out_dir: Path,
    *,
    base_model_name_or_path: str,
    progress: Progress = _quiet,
) -> None:
    """The adapter as PEFT saves it, naming `base_model_name_or_path` as its base (what
    `AutoPeftModelForCausalLM` loads), with the tokenizer and the generation config."""
    out_dir.mkdir(parents=True, exist_ok=True)
    progress("copying the adapter")
    for name in ADAPTER_FILES:
        shutil.copyfile(adapter_dir / name, out_dir / name)
    config_path = out_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    # Training recorded the directory it loaded the base from, which means nothing elsewhere.
    config["base_model_name_or_path"] = base_model_name_or_path
    config["inference_mode"] = True
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer = _save_tokenizer(base_model_dir, out_dir)
    generation_config(base_model_dir, tokenizer).save_pretrained(out_dir)


def export_merged(adapter_dir: Path, base_model_dir: Path, out_dir: Path, *, progress: Progress = _quiet) -> None:
    """A standalone Hugging Face model: the base weights plus the adapter's update (PEFT's
    `merge_and_unload`), in the base's own number format, with tokenizer and generation config."""
    out_dir.mkdir(parents=True, exist_ok=True)
    merged = merge_adapter(adapter_dir, base_model_dir, progress=progress)
    torch.nn.Module.to(merged, stored_dtype(base_model_dir))  # PreTrainedModel.to is typed for devices only
    progress("saving the merged weights")
    tokenizer = _save_tokenizer(base_model_dir, out_dir)
    merged.generation_config = generation_config(base_model_dir, tokenizer)
    merged.save_pretrained(out_dir)
    _add_legacy_config_keys(out_dir / "config.json")
    logger.info("merged %s into %s: %s", adapter_dir, base_model_dir, out_dir)


def merge_adapter(adapter_dir: Path, base_model_dir: Path, *, progress: Progress = _quiet) -> PreTrainedModel:
    """The base with the adapter's update merged in (PEFT's `merge_and_unload`), in float32."""
    progress("loading the base model")
    # Merged in float32, whatever the base is stored in: W + BA rounded once, at the end.
    base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    progress("merging the adapter")
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    assert isinstance(merged, PreTrainedModel)
    return merged


def _save_tokenizer(base_model_dir: Path, out_dir: Path) -> PreTrainedTokenizerBase:
    """The base's tokenizer files, with the chat template both in `chat_template.jinja` (where
    transformers 5 writes it) and in `tokenizer_config.json` (where older readers look: vLLM's and
    llama.cpp's converters before the split)."""
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    tokenizer.save_pretrained(out_dir)
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    if isinstance(tokenizer.chat_template, str):
        config.setdefault("chat_template", tokenizer.chat_template)
    # transformers 5 names its fast tokenizer class `TokenizersBackend`, which 4.x (what many
    # vLLM releases pin) does not know; both load `PreTrainedTokenizerFast` from tokenizer.json.
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("is_local", None)  # where transformers found the base, not a property of the tokenizer
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return tokenizer


def _add_legacy_config_keys(config_path: Path) -> None:
    """transformers 5 writes `dtype` and `rope_parameters`; 4.x reads `torch_dtype` and
    `rope_theta`, and would silently use its default RoPE base without it. Write both."""
    config = json.loads(config_path.read_text())
    if "dtype" in config:
        config.setdefault("torch_dtype", config["dtype"])
    rope = config.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope:
        config.setdefault("rope_theta", rope["rope_theta"])
        if rope.get("rope_type", "default") != "default":
            config.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def generation_config(model_dir: Path, tokenizer: PreTrainedTokenizerBase) -> GenerationConfig:
    """The base's generation config, as transformers (and so openft's server) reads it, with
    `eos_token_id` = every token openft ends a completion at (the chat template's end-of-turn
    token among them) and a pad token, so that `generate` needs no arguments to stop right."""
    if (model_dir / "generation_config.json").is_file():
        config = GenerationConfig.from_pretrained(model_dir)
    else:
        config = GenerationConfig.from_model_config(AutoConfig.from_pretrained(model_dir))
    ids = sorted(eos_token_ids(config, tokenizer))
    config.eos_token_id = ids[0] if len(ids) == 1 else ids
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else ids[0]
    if config.bos_token_id is None and tokenizer.bos_token_id is not None:
        config.bos_token_id = tokenizer.bos_token_id
    return config


def stored_dtype(model_dir: Path) -> torch.dtype:
    """The number format the model's weights are stored in (`dtype` in config.json)."""
    config = json.loads((model_dir / "config.json").read_text())
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name), None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32

"""Turn a GGUF checkpoint into a plain Hugging Face directory that loads in seconds."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

logger = logging.getLogger(__name__)

# Written last inside the build directory, so its presence means the conversion finished.
COMPLETE_MARKER = ".openft-complete"


def is_complete(model_dir: Path) -> bool:
    return (model_dir / COMPLETE_MARKER).is_file()


@contextmanager
def atomic_dir(out_dir: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a scratch dir next to `out_dir`; rename it to `out_dir` only if the block succeeds.

    A crash leaves at worst a hidden `.name.*` scratch dir, never a half-written `out_dir`.
    Without `overwrite`, a finished `out_dir` (say, from a concurrent process) is kept.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only; the result should read like any model dir
    try:
        yield tmp
        (tmp / COMPLETE_MARKER).touch()
        if overwrite and out_dir.exists():
            shutil.rmtree(out_dir)
        try:
            os.replace(tmp, out_dir)
        except OSError:
            if not is_complete(out_dir):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_once(out_dir: Path, build: Callable[[Path], None]) -> Path:
    """Run `build(scratch_dir)` unless `out_dir` already holds a finished build."""
    if not is_complete(out_dir):
        with atomic_dir(out_dir) as tmp:
            build(tmp)
    return out_dir


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize `gguf_path` into an fp32 safetensors model + tokenizer in `out_dir`.

    Idempotent and atomic; returns `out_dir`.
    """

    def build(tmp: Path) -> None:
        logger.info("converting %s to %s", gguf_path, out_dir)
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
        # transformers refuses to save a GGUF-loaded model, so copy the weights into a
        # fresh model whose config no longer claims to be quantized.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict(), assign=True)
        model.tie_weights()
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return build_once(out_dir, build)

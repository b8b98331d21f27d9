"""Which device and number format a model runs in."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

Precision = Literal["fp32", "bf16"]


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def use_cpu_threads(threads: int) -> None:
    """This process's torch intra-op threads: `threads`, or torch's default (one per core) for 0.
    A training run and generation that share a CPU and both take every core slow each other
    3-4x (bench/shared_cpu.py): engine/cpu_share.py moves cores between them, or a count fixes each."""
    if threads:
        torch.set_num_threads(threads)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' is bf16 on CUDA and fp32 on a CPU: see docs/serving.md for the CPU measurements."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise ValueError(f"unknown dtype {name!r}: use auto, {', '.join(dtypes)}")
    return dtypes[name]


def resolve_training_precision(name: str, device: torch.device) -> Precision:
    """'auto' is bf16 (a bf16 frozen base, matmuls under bf16 autocast) where the hardware multiplies
    bf16 natively, fp32 elsewhere: emulated bf16 is slower than fp32. See docs/training.md."""
    if name in ("fp32", "bf16"):
        return name  # type: ignore[return-value]
    if name != "auto":
        raise ValueError(f"unknown training precision {name!r}: use auto, fp32 or bf16")
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions: AVX512-BF16 or AMX on x86, the BF16
    extension on Arm (Linux reports them as CPU flags)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = {word for line in text.splitlines() if line.startswith(("flags", "Features")) for word in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})

"""Which device and number format a model runs in."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

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
    bf16 faster than fp32, fp32 elsewhere. See docs/training.md."""
    if name in ("fp32", "bf16"):
        return name  # type: ignore[return-value]
    if name != "auto":
        raise ValueError(f"unknown training precision {name!r}: use auto, fp32 or bf16")
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_bf16_matmul_speedup() >= CPU_BF16_MIN_SPEEDUP else "fp32"


# bf16 dot-product instructions do not make bf16 faster on every CPU that has them: bf16 matmuls of
# the model's shapes ran 2.2-2.4x fp32 on a Zen 4 (AVX512-BF16) and 3.8x on a Xeon with AMX, but
# 0.6x on a Xeon whose virtual machine offered AVX512-BF16 without AMX (oneDNN's AVX512-BF16 kernel
# there, 146 against 250 GFLOP/s). So "auto" measures; the margin keeps a noisy host's measurement
# from flipping between runs where the two are close.
CPU_BF16_MIN_SPEEDUP = 1.25


@functools.cache
def cpu_bf16_matmul_speedup() -> float:
    """How many times faster this CPU multiplies a (512 x 576) by (576 x 1536) matrix in bf16 than
    in fp32 (a small model's MLP shape), measured once per process (about 0.1 s), on the threads
    torch has; 0.0 without bf16 dot-product instructions, where bf16 is emulated and far slower."""
    if not cpu_has_native_bf16():
        return 0.0
    rows = {dtype: torch.randn(512, 576, dtype=dtype) for dtype in (torch.float32, torch.bfloat16)}
    weights = {dtype: torch.randn(1536, 576, dtype=dtype) for dtype in rows}
    best = {dtype: float("inf") for dtype in rows}
    for _ in range(6):  # alternated, so that a change in load falls on both; the first builds kernels
        for dtype in rows:
            started = time.perf_counter()
            F.linear(rows[dtype], weights[dtype])
            best[dtype] = min(best[dtype], time.perf_counter() - started)
    return best[torch.float32] / best[torch.bfloat16]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions: AVX512-BF16 or AMX on x86, the BF16
    extension on Arm (Linux reports them as CPU flags)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = {word for line in text.splitlines() if line.startswith(("flags", "Features")) for word in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})

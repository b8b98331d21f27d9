"""engine/devices.py: what "auto" training precision picks, and the check it rests on."""

from __future__ import annotations

import math

import pytest
import torch

from openft.engine.devices import (
    CPU_BF16_MIN_SPEEDUP,
    cpu_bf16_matmul_speedup,
    cpu_has_native_bf16,
    resolve_training_precision,
)

CPU = torch.device("cpu")


def test_auto_precision_on_a_cpu_follows_the_measured_speedup() -> None:
    speedup = cpu_bf16_matmul_speedup()
    assert math.isfinite(speedup) and speedup >= 0
    if not cpu_has_native_bf16():
        assert speedup == 0.0  # emulated bf16 is not worth measuring
    else:
        assert speedup > 0
    assert cpu_bf16_matmul_speedup() == speedup  # measured once per process
    expected = "bf16" if speedup >= CPU_BF16_MIN_SPEEDUP else "fp32"
    assert resolve_training_precision("auto", CPU) == expected


def test_a_forced_precision_is_kept_and_an_unknown_one_refused() -> None:
    assert resolve_training_precision("fp32", CPU) == "fp32"
    assert resolve_training_precision("bf16", CPU) == "bf16"
    with pytest.raises(ValueError, match="unknown training precision"):
        resolve_training_precision("fp16", CPU)

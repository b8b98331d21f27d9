"""Checking requested hyperparameters and resolving "auto" from the dataset size.

The rules for "auto" (documented in docs/training.md):
- n_epochs: 3, raised for small datasets so that n_examples x n_epochs reaches 100 (at most 25
  epochs), lowered for large ones so it stays near 25,000 (at least 1): the OpenAI cookbook's rule.
- batch_size: ceil(0.2 % of the examples), from 1 to 256 (1 up to 500 examples).
- learning_rate_multiplier: `OPENFT_AUTO_LEARNING_RATE_MULTIPLIER` (2.0); the learning rate is
  `OPENFT_BASE_LEARNING_RATE` (LoRA) x multiplier.
- beta (DPO only): 0.1, the value of the DPO paper and TRL's default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from openft.errors import InvalidRequest
from openft.protocol.fine_tuning import Hyperparameters

MAX_EPOCHS = 50
MAX_BATCH_SIZE = 256
MAX_BETA = 2.0
AUTO_BETA = 0.1


@dataclass(frozen=True)
class Resolved:
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    beta: float | None = None  # DPO jobs only

    def as_dict(self) -> dict[str, int | float]:
        values: dict[str, int | float] = {
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
        }
        if self.beta is not None:
            values["beta"] = self.beta
        return values


def check(requested: Hyperparameters, param_prefix: str) -> None:
    """Rejects values out of range, naming the parameter as the request spelled it."""
    n_epochs, batch_size = requested.n_epochs, requested.batch_size
    if isinstance(n_epochs, int) and not 1 <= n_epochs <= MAX_EPOCHS:
        raise _out_of_range(f"{param_prefix}.n_epochs", f"an integer from 1 to {MAX_EPOCHS}")
    if isinstance(batch_size, int) and not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise _out_of_range(f"{param_prefix}.batch_size", f"an integer from 1 to {MAX_BATCH_SIZE}")
    multiplier = requested.learning_rate_multiplier
    if multiplier not in ("auto", None) and not (isinstance(multiplier, float | int) and 0 < multiplier <= 100):
        raise _out_of_range(f"{param_prefix}.learning_rate_multiplier", "a number above 0 (at most 100)")
    beta = getattr(requested, "beta", None)
    if beta not in ("auto", None) and not (isinstance(beta, float | int) and 0 < beta <= MAX_BETA):
        raise _out_of_range(f"{param_prefix}.beta", f"a number above 0, at most {MAX_BETA:g}")


def _out_of_range(param: str, expected: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid value for '{param}': expected 'auto' or {expected}.", param=param, code="invalid_value"
    )


def resolve(requested: dict[str, object], n_examples: int, auto_multiplier: float) -> Resolved:
    """`requested` holds `beta` for DPO jobs only ("auto" or a number)."""
    n_epochs = requested.get("n_epochs")
    batch_size = requested.get("batch_size")
    multiplier = requested.get("learning_rate_multiplier")
    beta: float | None = None
    if "beta" in requested:
        given = requested["beta"]
        beta = float(given) if isinstance(given, int | float) else AUTO_BETA
    return Resolved(
        n_epochs=int(n_epochs) if isinstance(n_epochs, int) else auto_epochs(n_examples),
        batch_size=int(batch_size) if isinstance(batch_size, int) else auto_batch_size(n_examples),
        learning_rate_multiplier=float(multiplier) if isinstance(multiplier, int | float) else auto_multiplier,
        beta=beta,
    )


def auto_epochs(n_examples: int) -> int:
    if n_examples * 3 < 100:
        return min(25, 100 // max(n_examples, 1))
    if n_examples * 3 > 25_000:
        return max(1, 25_000 // n_examples)
    return 3


def auto_batch_size(n_examples: int) -> int:
    return min(MAX_BATCH_SIZE, max(1, math.ceil(0.002 * n_examples)))


def total_steps(n_examples: int, resolved: Resolved) -> int:
    return resolved.n_epochs * math.ceil(n_examples / resolved.batch_size)

"""Token counts of training examples, rendered exactly as training renders them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from openft.engine.data import tokenize_example

UNLIMITED = 10**9


class TokenCounter:
    def __init__(self, model_dir: Path) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def count(self, example: Mapping[str, Any]) -> int:
        """Tokens of the whole example, before any truncation."""
        return len(tokenize_example(self.tokenizer, example, UNLIMITED).input_ids)

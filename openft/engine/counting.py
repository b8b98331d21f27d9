"""Token counts of training examples, rendered exactly as training renders them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from openft.engine.data import tokenize_example
from openft.engine.dpo import tokenize_pair

UNLIMITED = 10**9


class TokenCounter:
    def __init__(self, model_dir: Path) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def count(self, example: Mapping[str, Any]) -> int:
        """Tokens of the whole example, before any truncation; a preference pair counts both of its
        sequences (the input with each answer), as training reads both."""
        if "preferred_output" in example:
            return sum(self.count_pair(example))
        return len(tokenize_example(self.tokenizer, example, UNLIMITED).input_ids)

    def count_pair(self, example: Mapping[str, Any]) -> tuple[int, int]:
        """Tokens of a preference pair's two sequences: the input with the preferred answer, and
        with the non-preferred one."""
        pair = tokenize_pair(self.tokenizer, example, UNLIMITED)
        return len(pair.chosen.input_ids), len(pair.rejected.input_ids)

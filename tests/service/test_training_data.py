"""The training-data rules on their own: one broken file per rule, awkward valid files, bounded memory."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from openft.service.training_data import DataError, check_file
from tests.data_corpus import BROKEN, VALID, Broken


@pytest.mark.parametrize("case", BROKEN, ids=lambda case: case.name)
def test_each_rule_names_the_code_and_line(tmp_path: Path, case: Broken) -> None:
    path = tmp_path / f"{case.name}.jsonl"
    path.write_bytes(case.content)
    with pytest.raises(DataError) as raised:
        check_file(path, "training_file", min_examples=10)
    assert raised.value.code == case.code
    assert raised.value.param == "training_file"
    if case.line is not None:
        assert f"Example at line {case.line} " in raised.value.message


@pytest.mark.parametrize("name", sorted(VALID))
def test_awkward_files_are_valid(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(VALID[name])
    assert check_file(path, "training_file", min_examples=10).n_examples == 10


def test_validation_file_errors_name_the_validation_file(tmp_path: Path) -> None:
    path = tmp_path / "valid.jsonl"
    path.write_bytes(b"[]\n")
    with pytest.raises(DataError) as raised:
        check_file(path, "validation_file", min_examples=1)
    assert (raised.value.code, raised.value.param) == ("invalid_validation_file", "validation_file")
    assert "invalid validation file" in raised.value.message


def test_a_large_file_validates_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "large.jsonl"
    example = {"messages": [{"role": "user", "content": "x" * 20_000}, {"role": "assistant", "content": "y" * 20_000}]}
    line = (json.dumps(example) + "\n").encode()
    with path.open("wb") as handle:
        for _ in range(2_500):  # about 100 MB
            handle.write(line)
    tracemalloc.start()
    try:
        summary = check_file(path, "training_file", min_examples=10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.n_examples == 2_500
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes while validating {path.stat().st_size} bytes"

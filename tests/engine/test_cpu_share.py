"""Training and generation sharing one host's CPU (engine/cpu_share.py): each takes every core while
the other is idle and half of them while it is busy; a crashed process or a stale serving mark
counts for nothing; a fixed count stays fixed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from openft.engine.cpu_share import SERVING_IDLE_SECONDS, CpuShare

ALL = 4  # torch's threads as each process starts here, whatever the machine's cores


@pytest.fixture(autouse=True)
def four_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(ALL)
    yield
    torch.set_num_threads(before)


def test_each_takes_every_core_while_alone_and_half_while_the_other_is_busy(tmp_path: Path) -> None:
    training, serving = CpuShare(tmp_path, "training"), CpuShare(tmp_path, "serving")
    assert training.share() == ALL and torch.get_num_threads() == ALL  # generation has not been busy
    assert serving.share() == ALL // 2 and torch.get_num_threads() == ALL // 2  # a run is training
    assert training.share() == ALL // 2  # and generation is busy now
    training.close()
    assert not training.path.exists()
    assert serving.share() == ALL  # the run is over
    serving.close()
    assert training.share() == ALL


def test_closing_gives_back_every_core(tmp_path: Path) -> None:
    CpuShare(tmp_path, "serving").busy()
    training = CpuShare(tmp_path, "training")
    assert training.share() == ALL // 2
    training.close()
    assert torch.get_num_threads() == ALL  # a later run in this process starts from every core


def test_serving_counts_as_busy_for_a_while_after_its_last_request(tmp_path: Path) -> None:
    serving, training = CpuShare(tmp_path, "serving"), CpuShare(tmp_path, "training")
    serving.busy()
    assert training.share() == ALL // 2
    idle_since = time.time() - SERVING_IDLE_SECONDS - 1
    os.utime(serving.path, (idle_since, idle_since))  # its last request ended that long ago
    assert training.share() == ALL


def test_the_file_of_a_process_that_is_gone_counts_for_nothing(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / f"training-{int(gone.stdout)}").touch()  # a run that crashed before its end
    (tmp_path / "training-not-a-pid").touch()
    assert CpuShare(tmp_path, "serving").share() == ALL


def test_a_fixed_count_stays_fixed_and_still_says_it_is_busy(tmp_path: Path) -> None:
    fixed = CpuShare(tmp_path, "training", threads=3)
    assert torch.get_num_threads() == 3
    CpuShare(tmp_path, "serving").busy()
    assert fixed.share() == 3 and torch.get_num_threads() == 3
    assert fixed.path.exists()
    torch.set_num_threads(ALL)
    assert CpuShare(tmp_path, "serving").share() == ALL // 2

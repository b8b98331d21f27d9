"""One CPU shared by training runs and generation on the same host.

Both at every core slow each other 3-4x, while each alone wants every core (bench/shared_cpu.py).
So each process that trains or generates on the CPU says so with a file in a directory of this
host, `{role}-{pid}`, and before each unit of work (a training step, a scheduler step) takes every
core while the other role is idle and half of them while it is busy:

- a training run is busy from its first step to its end: its file exists and its process lives
  (a run that crashed leaves a file whose pid is gone, which counts for nothing);
- generation is busy while it has requests: it touches its file at most once a second while it
  does, and counts as busy for `SERVING_IDLE_SECONDS` after the last touch (requests are bursty,
  and a training step, which is when training looks, can last longer than a burst).

A process given a fixed number of threads keeps it and still says when it is busy.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Literal

import torch

Role = Literal["training", "serving"]
SERVING_IDLE_SECONDS = 10.0
TOUCH_SECONDS = 1.0  # how stale the serving file's time may be while it serves


class CpuShare:
    """This process's side of the directory; `threads` > 0 fixes its thread count."""

    def __init__(self, directory: Path, role: Role, threads: int = 0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.role, self.fixed = directory, role, threads
        self.all_threads = torch.get_num_threads()  # torch's default: one per core
        self.path = directory / f"{role}-{os.getpid()}"
        self._touched = 0.0
        if threads:
            torch.set_num_threads(threads)

    def busy(self) -> None:
        """Marks this process busy (a training run: until `close`)."""
        now = time.monotonic()
        # A training run's file stands until `close`; generation's time says when it last worked.
        if not self._touched or (self.role == "serving" and now - self._touched >= TOUCH_SECONDS):
            self.path.touch()
            self._touched = now

    def close(self) -> None:
        """This process is done with the CPU for now (a training run's end); its threads are back at
        every core, for whatever runs in it next."""
        self.path.unlink(missing_ok=True)
        self._touched = 0.0
        if not self.fixed and torch.get_num_threads() != self.all_threads:
            torch.set_num_threads(self.all_threads)

    def other_busy(self) -> bool:
        other: Role = "serving" if self.role == "training" else "training"
        for path in self.directory.glob(f"{other}-*"):
            with contextlib.suppress(OSError, ValueError):  # gone meanwhile, or not ours
                if not _alive(int(path.name.split("-", 1)[1])):
                    continue
                if other == "training" or time.time() - path.stat().st_mtime < SERVING_IDLE_SECONDS:
                    return True
        return False

    def share(self) -> int:
        """Marks this process busy and sets its threads for the next unit of work; returns them."""
        self.busy()
        if self.fixed:
            return self.fixed
        threads = max(1, self.all_threads // 2) if self.other_busy() else self.all_threads
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        return threads


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True

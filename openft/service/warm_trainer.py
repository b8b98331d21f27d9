"""A training process kept ready: spawned before a job needs it, with torch, transformers and PEFT
imported and the base model of the job about to train (or of the job it last trained) loaded, so
that a claimed job starts training in a second or two instead of the 8 to 12 a fresh process takes.

Each process still trains one job and exits: what one run leaves in memory never reaches the next.
A ready process that waits longer than the idle time exits by itself, releasing its memory; so does
one whose worker is gone (its end of the pipe closes).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from multiprocessing.process import BaseProcess
from pathlib import Path

from openft.service.training_run import RunSpec, child_main, start

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preload:
    """What a ready process loads while it waits."""

    base_model_dir: str
    device: str
    precision: str


@dataclass
class _Ready:
    process: BaseProcess
    jobs: Pipe  # the worker's end: one RunSpec goes down it
    report: Pipe  # the worker's end: the run's outcome comes up it
    preload: Preload | None
    spawned_at: float


class WarmTrainer:
    """At most one ready process per worker. `prepare` (any thread) spawns one for a model unless
    one is ready for it; `start` hands a run to the ready process, or spawns a fresh one."""

    def __init__(self, idle_seconds: float) -> None:
        self.idle_seconds = idle_seconds  # 0: no ready process, every run starts cold
        self._lock = threading.Lock()
        self._ready: _Ready | None = None

    def prepare(self, preload: Preload) -> None:
        if not self.idle_seconds:
            return
        with self._lock:
            if self._usable() and self._ready is not None and self._ready.preload == preload:
                return
            self._retire()
            self._ready = _spawn(preload, self.idle_seconds)
            log.info("training process %s getting ready for %s", self._ready.process.pid, preload.base_model_dir)

    def start(self, spec: RunSpec) -> tuple[BaseProcess, Pipe]:
        with self._lock:
            ready, self._ready = (self._ready, None) if self._usable() else (None, self._ready)
            self._retire()
        if ready is None:
            return start(spec)
        ready.jobs.send(spec)
        ready.jobs.close()
        log.info("training %s in the ready process %s", spec.job_id, ready.process.pid)
        return ready.process, ready.report

    def close(self) -> None:
        with self._lock:
            self._retire()

    def _usable(self) -> bool:
        # The process's own idle clock starts once it is ready, after this one: a process that this
        # side still counts as waiting has not timed out on its side.
        ready = self._ready
        return (
            ready is not None and ready.process.is_alive() and time.monotonic() - ready.spawned_at < self.idle_seconds
        )

    def _retire(self) -> None:
        if self._ready is not None:
            self._ready.process.terminate()  # waiting, not training: nothing to save
            self._ready.jobs.close()
            self._ready.report.close()
            self._ready.process.join(5)
            self._ready = None


def _spawn(preload: Preload | None, idle_seconds: float) -> _Ready:
    context = multiprocessing.get_context("spawn")
    job_receiver, job_sender = context.Pipe(duplex=False)
    report_receiver, report_sender = context.Pipe(duplex=False)
    process = context.Process(
        target=ready_main,
        args=(preload, job_receiver, report_sender, idle_seconds),
        name="train-ready",
        daemon=True,
    )
    process.start()
    job_receiver.close()
    report_sender.close()
    return _Ready(process, job_sender, report_receiver, preload, time.monotonic())


def ready_main(preload: Preload | None, jobs: Pipe, report: Pipe, idle_seconds: float) -> None:
    """The ready process: import, load, wait for one run (or the idle time), train it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from openft.engine import preload_base_model  # the imports this process is kept for

    if preload is not None:
        try:
            # The warm-up pass only while no job waits: a job that came meanwhile starts at once.
            model_dir = Path(preload.base_model_dir)
            preload_base_model(model_dir, preload.device, preload.precision, lambda: not jobs.poll(0))
        except Exception:  # the run will load it itself, and report what is wrong with it
            log.exception("could not preload %s", preload.base_model_dir)
    try:
        if not jobs.poll(idle_seconds):
            return  # idle too long: exit, releasing the memory
        spec = jobs.recv()
    except (EOFError, OSError):
        return  # the worker is gone, or retired this process
    child_main(spec, report)

"""What a worker can run, and what a job needs of the worker that trains it.

A worker advertises its device kind (`cpu` or `cuda`), its GPUs and its memory (on CUDA the
smallest visible GPU's, since a job trains on one; on a CPU the machine's RAM, or its cgroup's
limit when lower): detected when it starts, each overridable by a setting. A job records, when it
is created, its base model's parameter count and the GPUs it needs. A worker claims only queued
jobs that fit it (store/jobs.py `claim_job`); validation, which only tokenizes, runs anywhere.

What fits is an estimate, a floor rather than a promise: the weights at the precision the engine
trains in (bf16 on CUDA, fp32 on a CPU: engine/train.py), as much again for activations, logits,
LoRA's gradients and optimizer state at moderate batch sizes and sequence lengths, plus 2 GiB for
the runtime (CUDA context, allocator, Python and torch). SmolLM2-135M-Instruct on a CPU needs
3.0 GiB by it; its measured peak was 3.2-3.9 GiB (docs/training.md). A worker that passes may still
run out of memory on long sequences with a large batch (its job is then queued again, and fails
after OPENFT_MAX_JOB_ATTEMPTS); one that fails it would certainly not have fit. (A CPU that trains
in bf16 holds its weights in half that: the estimate errs high there, and OPENFT_WORKER_MEMORY_BYTES
can say more.)
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection

from openft import ids
from openft.config import Settings
from openft.store import Database
from openft.store import workers as worker_rows

log = logging.getLogger(__name__)
RUNTIME_BYTES = 2 * 1024**3
WORKING_FACTOR = 2  # the weights, and as much again for what training holds beside them
BYTES_PER_PARAMETER = {"cuda": 2, "cpu": 4}  # the frozen base's number format when training LoRA

Device = Literal["cpu", "cuda"]


@dataclass(frozen=True)
class Capabilities:
    device: Device
    gpus: int
    memory_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "gpus": self.gpus, "memory_bytes": self.memory_bytes}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Capabilities:
        device: Device = "cuda" if values.get("device") == "cuda" else "cpu"
        return cls(device=device, gpus=int(values.get("gpus", 0)), memory_bytes=int(values.get("memory_bytes", 0)))

    @property
    def max_parameters(self) -> int:
        """The largest base model (in parameters) whose training fits this worker's memory."""
        return max(0, self.memory_bytes - RUNTIME_BYTES) // (BYTES_PER_PARAMETER[self.device] * WORKING_FACTOR)

    def fits(self, base_parameters: int | None, required_gpus: int) -> bool:
        """What `claim_job` asks in SQL, asked of one job."""
        return required_gpus <= self.gpus and (base_parameters is None or base_parameters <= self.max_parameters)


def memory_needed(base_parameters: int, device: Device) -> int:
    """The memory a worker of `device` needs to train a base model of `base_parameters`."""
    return base_parameters * BYTES_PER_PARAMETER[device] * WORKING_FACTOR + RUNTIME_BYTES


def required_gpus(base_parameters: int | None, settings: Settings) -> int:
    """1 when the base model is larger than OPENFT_GPU_REQUIRED_ABOVE_PARAMETERS (when set): too
    large to train on a CPU in useful time; else 0, any device."""
    limit = settings.gpu_required_above_parameters
    return int(bool(limit and base_parameters is not None and base_parameters > limit))


def detect(settings: Settings) -> Capabilities:
    """This machine's, as a worker would train on it; OPENFT_WORKER_GPUS and
    OPENFT_WORKER_MEMORY_BYTES override what is found."""
    device, gpus, gpu_memory = _cuda(settings.training_device)
    if settings.worker_gpus is not None:
        gpus = settings.worker_gpus
    memory = settings.worker_memory_bytes
    if memory is None:
        memory = gpu_memory if device == "cuda" else _ram_bytes()
    return Capabilities(device=device, gpus=gpus if device == "cuda" else 0, memory_bytes=memory)


def describe(capabilities: Capabilities) -> str:
    memory = f"{capabilities.memory_bytes / 1024**3:.1f} GiB"
    if capabilities.device == "cuda":
        return f"cuda, {capabilities.gpus} GPU(s) of {memory}"
    return f"cpu, {memory} of memory"


def _cuda(training_device: str) -> tuple[Device, int, int]:
    """(the device kind jobs would train on, visible GPUs, the smallest one's memory)."""
    if training_device == "cpu":
        return "cpu", 0, 0
    import torch  # only a worker that may train on CUDA asks

    if training_device != "cuda" and not torch.cuda.is_available():
        return "cpu", 0, 0
    count = torch.cuda.device_count()
    memory = min((torch.cuda.get_device_properties(i).total_memory for i in range(count)), default=0)
    return "cuda", count, int(memory)


def _ram_bytes() -> int:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            limit = limit_file.read_text().strip()
        except OSError:
            continue
        if limit.isdigit():
            total = min(total, int(limit))
    return int(total)


def unfit_note(
    connection: Connection, base_model: str, base_parameters: int | None, gpus: int, settings: Settings
) -> str | None:
    """What a new job's events say when workers are running but none of them fits it (it waits in
    the queue until one that does starts); None when one fits, or none is running to ask."""
    live = worker_rows.live_workers(connection, time.time() - settings.worker_timeout_seconds)
    advertised = [Capabilities.from_dict(worker.capabilities) for worker in live]
    if not advertised or any(capabilities.fits(base_parameters, gpus) for capabilities in advertised):
        return None
    needs = []
    if gpus:
        needs.append(f"a worker with {gpus} GPU(s)")
    if base_parameters is not None:
        needs.append(
            f"{memory_needed(base_parameters, 'cuda') / 1024**3:.1f} GiB of GPU memory or "
            f"{memory_needed(base_parameters, 'cpu') / 1024**3:.1f} GiB on a CPU for its "
            f"{base_parameters:,} parameters"
        )
    return (
        f"No running worker can train {base_model}: it needs {' and '.join(needs)}; the "
        f"{len(advertised)} running have {'; '.join(describe(capabilities) for capabilities in advertised)}. "
        "The job waits in the queue until a worker that fits starts."
    )


class WorkerPresence:
    """A worker's row in `workers`: written when it starts, beaten with its heartbeat, removed when
    it stops; rows of workers silent past OPENFT_WORKER_TIMEOUT_SECONDS are pruned by any worker's
    heartbeat. It also bounds what the worker claims (`claim_bounds`)."""

    def __init__(self, database: Database, settings: Settings, worker_id: str) -> None:
        self.database = database
        self.settings = settings
        self.worker_id = worker_id
        self.started_at = ids.now()
        self._capabilities: Capabilities | None = None

    @property
    def capabilities(self) -> Capabilities:
        if self._capabilities is None:
            self._capabilities = detect(self.settings)
        return self._capabilities

    def register(self) -> None:
        record = worker_rows.WorkerRecord(
            id=self.worker_id,
            host=socket.gethostname(),
            started_at=self.started_at,
            heartbeat_at=time.time(),
            capabilities=self.capabilities.as_dict(),
        )
        with self.database.transaction() as connection:
            worker_rows.remove_worker(connection, self.worker_id)
            worker_rows.register_worker(connection, record)

    def beat(self) -> None:
        now = time.time()
        with self.database.transaction() as connection:
            alive = worker_rows.beat_worker(connection, self.worker_id, now)
            worker_rows.prune_workers(connection, now - self.settings.worker_timeout_seconds)
        if not alive:  # pruned while it couldn't beat (a long pause, the database away)
            self.register()

    def leave(self) -> None:
        try:
            with self.database.transaction() as connection:
                worker_rows.remove_worker(connection, self.worker_id)
        except Exception:  # the database is away: the row is pruned once it has been silent long enough
            log.warning("%s: could not remove its row from workers", self.worker_id, exc_info=True)

    def claim_bounds(self) -> dict[str, int]:
        """`claim_job`'s bounds for training: the base models and GPUs this worker can take."""
        return {"max_parameters": self.capabilities.max_parameters, "gpus": self.capabilities.gpus}

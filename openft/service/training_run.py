"""One training run of one job: a spawned child process trains through the engine and records
metrics events and checkpoints as it goes; the parent (a worker) supervises it and writes the
outcome. The child never decides the job's final status: it only reports how the run ended."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any, Literal

from openft import ids
from openft.blobs import BlobStore
from openft.service import wandb_run
from openft.service.lifecycle import add_event
from openft.service.naming import checkpoint_name
from openft.store import Database
from openft.store import checkpoints as checkpoint_rows
from openft.store import events as event_rows
from openft.store import jobs as job_rows
from openft.store.checkpoints import CheckpointRecord

log = logging.getLogger(__name__)
CHECKPOINT_EVENT = "Checkpoint created at step "  # then "{step} with Snapshot ID: {name}"


@dataclass(frozen=True)
class RunSpec:
    """Everything the child needs, picklable: it opens its own database connection."""

    database_url: str
    blobs: BlobStore  # picklable: an object store's client is made again in the child
    data_dir: str  # the worker's own
    job_id: str
    worker_id: str  # the job's holder while this run is the job's; another run's once it isn't
    organization: str
    base_model: str
    suffix: str | None
    checkpoints_kept: int
    output_key: str
    train_config: dict[str, Any]
    processes: str = "auto"  # OPENFT_TRAINING_PROCESSES: this process is rank 0 of that many
    threads: int = 0  # OPENFT_TRAINING_THREADS: torch threads for the run (0: one per core), split among its ranks


@dataclass(frozen=True)
class RunOutcome:
    status: str  # "completed" | "cancelled" | "paused" | "error"; "crashed" (no report: the parent says it)
    trained_tokens: int = 0
    resume_state: str | None = None
    error: str | None = None


def start(spec: RunSpec) -> tuple[multiprocessing.process.BaseProcess, Pipe]:
    """Spawns (never forks: torch and threads don't survive a fork) the child running `spec`."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=child_main, args=(spec, sender), name=f"train-{spec.job_id}", daemon=True)
    process.start()
    sender.close()
    return process, receiver


def child_main(spec: RunSpec, report: Pipe) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    recorder = _Recorder(spec)
    # The worker terminates its run when it stops: save the state at the next step, as a pause does.
    signal.signal(signal.SIGTERM, lambda _signal, _frame: recorder.terminated.set())
    try:
        outcome = _train(spec, recorder)
    except BaseException as error:
        log.exception("training run of %s failed", spec.job_id)
        summary = "".join(traceback.format_exception_only(type(error), error)).strip()
        outcome = RunOutcome(status="error", error=summary)
    wandb_finished = recorder.finish_wandb(outcome.status)
    try:
        report.send(asdict(outcome))
        report.close()
    except OSError:  # the worker is gone; what the run saved is in the database and the blob store
        log.warning("the worker of %s is gone; not reporting %s", spec.job_id, outcome.status)
    if not wandb_finished:
        # W&B failed or is stuck, and its exit hooks would wait on it again: the outcome is reported,
        # what the run saved is saved, so leave without them.
        logging.shutdown()
        os._exit(0)


def _train(spec: RunSpec, recorder: _Recorder) -> RunOutcome:
    from openft.engine import TrainConfig, resolve_processes, train_in_processes, use_cpu_threads

    config_values = dict(spec.train_config)
    paths = ("base_model_dir", "train_file", "validation_file", "output_dir", "resume_from", "init_adapter")
    for key in (*paths, "cpu_share_dir"):
        if config_values.get(key) is not None:
            config_values[key] = Path(config_values[key])
    config = TrainConfig(**config_values)
    # With several processes this one is rank 0: the recorder's callbacks, the signals and the
    # report stay here, and the other ranks follow its stop requests (see engine/distributed.py).
    processes = resolve_processes(spec.processes, config.device)
    use_cpu_threads(spec.threads)
    result = train_in_processes(config, recorder.callbacks(), processes)
    recorder.database.dispose()
    return RunOutcome(
        status=result.status,
        trained_tokens=result.trained_tokens,
        resume_state=recorder.resume_key if result.resume_state else None,
    )


def metrics_data(metrics: Any, dpo: bool) -> dict[str, Any]:
    """A step's metrics event data: OpenAI's keys; a DPO job's accuracy is the preference accuracy
    (`*_preference_accuracy`), with the mean reward margin beside it (`*_reward_margin`)."""
    data: dict[str, Any] = {"step": metrics.step, "total_steps": metrics.total_steps}
    for key in ("train", "valid", "full_valid"):
        loss = getattr(metrics, f"{key}_loss")
        if loss is None:
            continue
        data[f"{key}_loss"] = loss
        accuracy = getattr(metrics, f"{key}_mean_token_accuracy")
        if dpo:
            data[f"{key}_preference_accuracy"] = accuracy
            data[f"{key}_reward_margin"] = getattr(metrics, f"{key}_reward_margin")
        else:
            data[f"{key}_mean_token_accuracy"] = accuracy
    return data


class _Recorder:
    """The engine's callbacks, turned into events, checkpoint rows and stop requests."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.database = Database(spec.database_url)
        self.blobs = spec.blobs
        self.resume_key: str | None = None  # the blob of the last resume state this run saved
        self.parent = os.getppid()
        self.started = time.monotonic()
        self.first_step: int | None = None
        self.terminated = threading.Event()
        self.wandb: wandb_run.WandbRun | None = None

    def callbacks(self) -> Any:
        from openft.engine import TrainCallbacks

        return TrainCallbacks(
            on_start=self.on_start,
            on_step=self.on_step,
            on_checkpoint=self.on_checkpoint,
            should_stop=self.should_stop,
            on_resume_state=self.on_resume_state,
        )

    def on_start(self, start: Any) -> None:
        """Forget what earlier runs of this job recorded after the step this run starts from (all of
        it, starting afresh): it is recorded again, so every step's metrics appear once."""
        job_id = self.spec.job_id
        with self.database.transaction() as connection:
            job = job_rows.get_job(connection, job_id)
            if job is None or job.worker_id != self.spec.worker_id:
                raise RuntimeError(f"{job_id} is no longer this run's to train")
            stale = [c for c in checkpoint_rows.all_checkpoints(connection, job_id) if c.step_number > start.start_step]
            for checkpoint in stale:
                checkpoint_rows.delete_checkpoint(connection, checkpoint.id)
            metrics = event_rows.metrics_events(connection, job_id)
            redone = [e.id for e in metrics if int((e.data or {}).get("step", 0)) > start.start_step]
            for event in event_rows.message_events(connection, job_id, CHECKPOINT_EVENT):
                if int(event.message[len(CHECKPOINT_EVENT) :].split(" ", 1)[0]) > start.start_step:
                    redone.append(event.id)
            event_rows.delete_events(connection, redone)
            if start.start_step:
                add_event(connection, job_id, f"Training continues from step {start.start_step}/{start.total_steps}")
        for checkpoint in stale:
            self.blobs.delete_tree(checkpoint.blob_key)
        self.start_wandb(job, start)

    def start_wandb(self, job: job_rows.JobRecord, start: Any) -> None:
        """A job with a wandb integration logs to its W&B run (the same one on every run of the job)."""
        options = wandb_run.run_options(
            job,
            base_model=self.spec.base_model,
            train_config=self.spec.train_config,
            data_dir=Path(self.spec.data_dir),  # <data dir>/wandb/ without WANDB_DIR
            start=start,
        )
        if options is not None:
            self.wandb = wandb_run.WandbRun(options, self._wandb_event)

    def _wandb_event(self, message: str, level: str, data: dict[str, Any] | None) -> None:
        with self.database.transaction() as connection:
            add_event(connection, self.spec.job_id, message, level=level, data=data)

    def finish_wandb(self, status: str) -> bool:
        """Ends the W&B run however training ended; False unless W&B ran and finished cleanly."""
        return self.wandb is None or self.wandb.finish(exit_code=1 if status == "error" else 0)

    def on_resume_state(self, path: Path, step: int) -> None:
        # Recorded as a blob key, so the next run finds it wherever it runs (a PUT replaces it whole).
        self.resume_key = f"{self.spec.output_key}/{path.name}"
        self.blobs.upload_file(self.resume_key, path)
        with self.database.transaction() as connection:
            job_rows.update_job(connection, self.spec.job_id, held_by=self.spec.worker_id, resume_from=self.resume_key)
        log.info("resume state of %s saved at step %d", self.spec.job_id, step)

    def on_step(self, metrics: Any) -> None:
        if self.first_step is None:
            self.first_step, self.started = metrics.step - 1, time.monotonic()
        done = metrics.step - self.first_step
        remaining = (time.monotonic() - self.started) / done * (metrics.total_steps - metrics.step)
        data = metrics_data(metrics, dpo=self.spec.train_config.get("training_method") == "dpo")
        message = f"Step {metrics.step}/{metrics.total_steps}: training loss={metrics.train_loss:.2f}"
        for key, label in (("valid", "validation"), ("full_valid", "full validation")):
            loss = getattr(metrics, f"{key}_loss")
            if loss is not None:
                message += f", {label} loss={loss:.2f}"
        with self.database.transaction() as connection:
            add_event(connection, self.spec.job_id, message, type="metrics", data=data)
            job_rows.update_job(connection, self.spec.job_id, estimated_finish=ids.now() + round(remaining))
        if self.wandb is not None:  # the metrics events' keys, at W&B step = the job's step
            self.wandb.log(metrics.step, {k: v for k, v in data.items() if k not in ("step", "total_steps")})

    def on_checkpoint(self, checkpoint: Any) -> None:
        metrics = checkpoint.metrics
        values = {
            "step": float(metrics.step),
            "train_loss": metrics.train_loss,
            "train_mean_token_accuracy": metrics.train_mean_token_accuracy,
            "valid_loss": metrics.valid_loss,
            "valid_mean_token_accuracy": metrics.valid_mean_token_accuracy,
            "full_valid_loss": metrics.full_valid_loss,
            "full_valid_mean_token_accuracy": metrics.full_valid_mean_token_accuracy,
        }
        checkpoint_id = ids.new_id("ftckpt_")
        # Published under a key of its own, never reused (a resumed run may redo a step): a copy
        # that an API server cached is never stale.
        blob_key = f"{self.spec.output_key}/checkpoints/{Path(checkpoint.path).name}-{checkpoint_id}"
        self.blobs.upload_tree(blob_key, Path(checkpoint.path))
        record = CheckpointRecord(
            id=checkpoint_id,
            job_id=self.spec.job_id,
            organization=self.spec.organization,
            created_at=ids.now(),
            name=checkpoint_name(self.spec.base_model, self.spec.organization, self.spec.suffix, checkpoint.step),
            step_number=checkpoint.step,
            metrics={key: value for key, value in values.items() if value is not None},
            blob_key=blob_key,
        )
        with self.database.transaction() as connection:
            checkpoint_rows.insert_checkpoint(connection, record)
            if checkpoint.step < checkpoint.metrics.total_steps:
                add_event(
                    connection, self.spec.job_id, f"{CHECKPOINT_EVENT}{checkpoint.step} with Snapshot ID: {record.name}"
                )
            expired = checkpoint_rows.all_checkpoints(connection, self.spec.job_id)[: -self.spec.checkpoints_kept]
            for old in expired:
                checkpoint_rows.delete_checkpoint(connection, old.id)
        for old in expired:
            self.blobs.delete_tree(old.blob_key)

    def should_stop(self) -> Literal["cancel", "pause"] | None:
        with self.database.transaction() as connection:
            job = job_rows.get_job(connection, self.spec.job_id)
        if job is None or job.control == "cancel" or job.status == "cancelled":
            return "cancel"
        if job.worker_id != self.spec.worker_id:
            return "cancel"  # requeued after this run's worker went silent: the job is another run's now
        if os.getppid() != self.parent or self.terminated.is_set():
            # The worker is gone (it will be requeued) or stopping: save the state, as a pause does,
            # and stop burning the machine. The next run continues from here.
            return "pause"
        if job.control == "pause":
            return "pause"
        return None

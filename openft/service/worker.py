"""A worker: validates new jobs, trains queued ones (one at a time, each in a spawned child), keeps
a heartbeat on the jobs it holds, and requeues jobs whose worker has died.

The jobs table is the queue: a claim is one conditional UPDATE, so several workers (`openft serve`
embeds one, `openft worker` runs more) on the same database each get different jobs.
"""

from __future__ import annotations

import base64
import csv
import io
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openft import ids
from openft.blobs import BlobStore
from openft.config import Settings
from openft.errors import NotFound
from openft.service import hyperparameters, training_data
from openft.service.capabilities import WorkerPresence, describe
from openft.service.files import FileService
from openft.service.gc import GarbageCollector
from openft.service.lifecycle import add_event, fail, transition
from openft.service.models import BaseModelRegistry
from openft.service.naming import fine_tuned_model_name
from openft.service.training_run import RunOutcome, RunSpec
from openft.service.warm_trainer import Preload, WarmTrainer
from openft.store import Database
from openft.store import checkpoints as checkpoint_rows
from openft.store import events as event_rows
from openft.store import jobs as job_rows
from openft.store.jobs import JobRecord

if TYPE_CHECKING:
    from openft.engine.counting import TokenCounter

log = logging.getLogger(__name__)
VALIDATING = ["validating_files"]  # the statuses a validator's outcome may leave
RUNNING = ["running"]  # ... and a training run's

RESULT_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")
RESULT_KEYS = ("train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy")
DPO_RESULT_COLUMNS = (
    "step",
    "train_loss",
    "train_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "train_reward_margin",
    "valid_reward_margin",
)
DPO_RESULT_KEYS = (
    "train_loss",
    "train_preference_accuracy",
    "valid_loss",
    "valid_preference_accuracy",
    "train_reward_margin",
    "valid_reward_margin",
)


class Worker:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        blobs: BlobStore,
        files: FileService,
        base_models: BaseModelRegistry,
    ) -> None:
        self.settings = settings
        self.database = database
        self.blobs = blobs
        self.files = files
        self.base_models = base_models
        self.id = "worker-" + ids.random_token(12)
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._counters: dict[str, TokenCounter] = {}
        self.presence = WorkerPresence(database, settings, self.id)  # what it can run, in `workers`
        self.warm = WarmTrainer(settings.warm_trainer_idle_seconds)
        self.presence = WorkerPresence(database, settings, self.id)  # what it can run, in `workers`

    def start(self) -> None:
        self.presence.register()
        for target in (self._validate_loop, self._train_loop, self._heartbeat_loop, self._gc_loop):
            thread = threading.Thread(target=target, name=f"{self.id}-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("%s started (%s)", self.id, describe(self.presence.capabilities))

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join()
        self.warm.close()
        self.presence.leave()
        log.info("%s stopped", self.id)

    def _loop(self, step: object) -> None:
        while not self.stopping.is_set():
            try:
                worked = step()  # type: ignore[operator]
            except Exception:
                log.exception("%s: unexpected error; carrying on", self.id)
                worked = False
            if not worked:
                self.stopping.wait(self.settings.worker_poll_seconds)

    def _validate_loop(self) -> None:
        self._loop(self.validate_next)

    def _train_loop(self) -> None:
        self._loop(self.train_next)

    def _heartbeat_loop(self) -> None:
        while not self.stopping.wait(self.settings.worker_heartbeat_seconds):
            try:
                with self.database.transaction() as connection:
                    job_rows.beat(connection, self.id, time.time())
                self.presence.beat()
                self.requeue_lost_jobs()
            except Exception:
                log.exception("%s: heartbeat failed", self.id)

    def _gc_loop(self) -> None:
        interval = self.settings.gc_interval_seconds
        collector = GarbageCollector(self.database, self.blobs, self.settings)
        while interval and not self.stopping.wait(interval):
            try:
                collector.collect()
            except Exception:
                log.exception("%s: garbage collection failed", self.id)

    def _claim(self, status: str) -> JobRecord | None:
        # Training takes only jobs whose base model fits this worker; validation runs anywhere.
        bounds = self.presence.claim_bounds() if status == "queued" else {}
        with self.database.transaction() as connection:
            return job_rows.claim_job(connection, self.id, status, time.time(), **bounds)

    def _release(self, job_id: str) -> None:
        with self.database.transaction() as connection:
            job_rows.update_job(connection, job_id, held_by=self.id, worker_id=None, control=None)

    # --- validation -------------------------------------------------------------------------

    def validate_next(self) -> bool:
        job = self._claim("validating_files")
        if job is None:
            return False
        self._get_ready(job)  # while the files are checked
        try:
            resolved = self._validate(job)
        except training_data.DataError as error:
            with self.database.transaction() as connection:
                fail(connection, job.id, VALIDATING, error.code, error.message, error.param, worker_id=None)
            self._release(job.id)
            return True
        except Exception as error:
            log.exception("validating %s failed", job.id)
            with self.database.transaction() as connection:
                fail(
                    connection, job.id, VALIDATING, "validation_error", f"Validation failed unexpectedly: {error}", None
                )
            self._release(job.id)
            return True
        with self.database.transaction() as connection:
            queued = transition(
                connection,
                job.id,
                VALIDATING,
                "queued",
                held_by=self.id,
                worker_id=None,
                hyperparameters={**job.hyperparameters, "resolved": resolved.as_dict()},
            )
            if queued:
                add_event(connection, job.id, "Files validated, moving job to queued state")
        if not queued:
            self._release(job.id)
        return True

    def _validate(self, job: JobRecord) -> hyperparameters.Resolved:
        progress = _ValidationProgress(self.database, job.id, self._token_counter(job.base), self.settings)
        expected: training_data.Format = "preference" if job.method_type == "dpo" else "chat"
        summary = training_data.check_file(
            self._file_path(job, job.training_file, "training_file"),
            "training_file",
            min_examples=self.settings.min_training_examples,
            expected=expected,
            file_id=job.training_file,
            on_example=progress.on_example,
        )
        if job.validation_file:
            training_data.check_file(
                self._file_path(job, job.validation_file, "validation_file"),
                "validation_file",
                min_examples=1,
                expected=expected,
                file_id=job.validation_file,
            )
        resolved = hyperparameters.resolve(
            job.hyperparameters["requested"], summary.n_examples, self.settings.auto_learning_rate_multiplier
        )
        progress.report_totals(resolved.n_epochs)
        return resolved

    def _token_counter(self, model: str) -> TokenCounter:
        from openft.engine.counting import TokenCounter  # loads torch: only when a job needs it

        if model not in self._counters:
            self._counters[model] = TokenCounter(self.base_models.local_directory(model))
        return self._counters[model]

    def _file_path(self, job: JobRecord, file_id: str, param: str) -> Path:
        try:
            record = self.files.get_record(job.organization, file_id)
        except NotFound:
            code = "invalid_validation_file" if param == "validation_file" else "invalid_training_file"
            raise training_data.DataError(code, f"File {file_id} no longer exists.", param) from None
        return self.blobs.local_file(record.blob_key)  # in place, or this worker's cached copy

    # --- training ---------------------------------------------------------------------------

    def train_next(self) -> bool:
        job = self._claim("queued")
        if job is None:
            return False
        with self.database.transaction() as connection:
            started = transition(connection, job.id, ["queued"], "running", held_by=self.id, attempts=job.attempts + 1)
            if started:
                add_event(connection, job.id, "Fine-tuning job started", empty_data=False)
                if job.start_from:
                    add_event(connection, job.id, f"Training continues the fine-tuned model {job.start_from}")
        if not started:
            self._release(job.id)
            return True
        try:
            self._finish(job, self._supervise(job, self._run_spec(job)))
        except Exception as error:
            log.exception("training %s failed", job.id)
            with self.database.transaction() as connection:
                fail(connection, job.id, RUNNING, "training_failed", f"Training failed: {error}", None, worker_id=None)
            self._release(job.id)
        if not self.stopping.is_set():
            self._get_ready(job)  # the next job is likely on the same base model
        return True

    def _get_ready(self, job: JobRecord) -> None:
        """Has a training process made ready with `job`'s base model loaded (see warm_trainer)."""
        try:
            model_dir = self.base_models.local_directory(job.base)
        except Exception:  # validation or training reports what is wrong with the model
            log.exception("%s: no ready process for %s", self.id, job.base)
            return
        device, precision = self.settings.training_device, self.settings.training_precision
        self.warm.prepare(Preload(str(model_dir), device, precision))

    def _start_adapter(self, job: JobRecord) -> str | None:
        """The adapter a continued job starts from (authorized when the job was created)."""
        if job.start_from is None:
            return None
        with self.database.transaction() as connection:
            found = checkpoint_rows.find_model(connection, job.start_from)
        if found is None:
            raise RuntimeError(f"the model {job.start_from} it continues no longer exists")
        return str(self.blobs.local_tree(found[0].blob_key))

    def _run_spec(self, job: JobRecord) -> RunSpec:
        resolved = job.hyperparameters["resolved"]
        output_key = f"jobs/{job.id}"
        output_dir = self.blobs.work_dir(output_key)  # the runner publishes checkpoints from here
        train_config = {
            "base_model_dir": str(self.base_models.local_directory(job.base)),
            "training_method": job.method_type,
            "dpo_beta": resolved.get("beta") or 0.0,
            "init_adapter": self._start_adapter(job),
            "train_file": str(self._file_path(job, job.training_file, "training_file")),
            "validation_file": str(self._file_path(job, job.validation_file, "validation_file"))
            if job.validation_file
            else None,
            "output_dir": str(output_dir),
            "n_epochs": resolved["n_epochs"],
            "batch_size": resolved["batch_size"],
            "learning_rate": self.settings.base_learning_rate * resolved["learning_rate_multiplier"],
            "seed": job.seed,
            "lora_r": self.settings.lora_r,
            "lora_alpha": self.settings.lora_alpha,
            "max_seq_len": self.settings.max_seq_len,
            "device": self.settings.training_device,
            "precision": self.settings.training_precision,
            "eval_interval": self.settings.eval_interval_steps,
            "cpu_share_dir": str(self.settings.resolved_cpu_share_dir),
            "fixed_threads": self.settings.training_threads > 0,
            # Set by a pause, or by the last run's periodic save when it crashed or its worker was lost.
            "resume_from": str(self.blobs.fetch_file(job.resume_from, output_dir / "resume.pt"))
            if job.resume_from
            else None,
            "resume_save_seconds": self.settings.resume_save_seconds,
        }
        return RunSpec(
            database_url=self.settings.resolved_database_url,
            blobs=self.blobs,
            data_dir=str(self.settings.data_dir),
            job_id=job.id,
            worker_id=self.id,
            organization=job.organization,
            base_model=job.base,
            suffix=job.suffix,
            checkpoints_kept=self.settings.checkpoints_kept,
            output_key=output_key,
            train_config=train_config,
            processes=self.settings.training_processes,
            threads=self.settings.training_threads,
        )

    def _supervise(self, job: JobRecord, spec: RunSpec) -> RunOutcome:
        process, report = self.warm.start(spec)
        log.info("%s: training %s in process %s", self.id, job.id, process.pid)
        stop_asked_at: float | None = None
        while process.is_alive():
            process.join(self.settings.worker_poll_seconds)
            if self.stopping.is_set() and stop_asked_at is None:
                stop_asked_at = time.monotonic()
                process.terminate()
            with self.database.transaction() as connection:
                current = job_rows.get_job(connection, job.id)
            if current is not None and current.status == "cancelled" and stop_asked_at is None:
                stop_asked_at = time.monotonic()
            if stop_asked_at is not None and time.monotonic() - stop_asked_at > self.settings.stop_grace_seconds:
                log.warning("%s: run of %s did not stop in time; killing it", self.id, job.id)
                process.kill()
        try:
            outcome = RunOutcome(**report.recv()) if report.poll() else None
        except EOFError:  # the child died before it could report
            outcome = None
        report.close()
        if outcome is None:
            reason = "stopped with the worker" if self.stopping.is_set() else f"exited with code {process.exitcode}"
            # Killed (out of memory, kill -9) or crashed: what it saved is in the resume state.
            return RunOutcome(status="crashed", error=f"The training process {reason} without a result.")
        return outcome

    def _finish(self, job: JobRecord, outcome: RunOutcome) -> None:
        log.info("%s: run of %s ended: %s", self.id, job.id, outcome.status)
        if self.stopping.is_set() and outcome.status != "completed":
            self._requeue(job.id, "The worker stopped; the job is queued again")
        elif outcome.status == "completed":
            self._succeed(job, outcome)
        elif outcome.status == "paused":
            with self.database.transaction() as connection:
                if transition(
                    connection,
                    job.id,
                    RUNNING,
                    "paused",
                    held_by=self.id,
                    worker_id=None,
                    control=None,
                    resume_from=outcome.resume_state,
                ):
                    add_event(connection, job.id, "Fine-tuning job paused")
            self._release(job.id)
        elif outcome.status == "cancelled":
            self._release(job.id)
        elif outcome.status == "crashed" and job.attempts + 1 < self.settings.max_job_attempts:
            self._requeue(job.id, f"{outcome.error} The job is queued again and continues from its last saved step")
        else:
            with self.database.transaction() as connection:
                fail(
                    connection,
                    job.id,
                    RUNNING,
                    "training_failed",
                    f"Training failed: {outcome.error}",
                    None,
                    worker_id=None,
                )
            self._release(job.id)

    def _succeed(self, job: JobRecord, outcome: RunOutcome) -> None:
        result_file = self.files.store_generated(
            job.organization, "step_metrics.csv", "fine-tune-results", self._result_csv(job)
        )
        with self.database.transaction() as connection:
            final = checkpoint_rows.all_checkpoints(connection, job.id)[-1]
            name = fine_tuned_model_name(job.base, job.organization, job.suffix)
            succeeded = transition(
                connection,
                job.id,
                RUNNING,
                "succeeded",
                held_by=self.id,
                worker_id=None,
                control=None,
                fine_tuned_model=name,
                trained_tokens=outcome.trained_tokens,
                result_files=[result_file.id],
            )
            if succeeded:
                checkpoint_rows.rename_checkpoint(connection, final.id, name)
                add_event(connection, job.id, f"New fine-tuned model created: {name}")
                add_event(connection, job.id, "The job has successfully completed")
        if not succeeded:
            self.files.delete(job.organization, result_file.id)
            self._release(job.id)

    def _result_csv(self, job: JobRecord) -> bytes:
        """step_metrics.csv: one row per step, OpenAI's columns (a DPO job's accuracy is the
        preference accuracy, and its reward margins follow)."""
        with self.database.transaction() as connection:
            events = event_rows.metrics_events(connection, job.id)
        dpo = job.method_type == "dpo"
        columns = DPO_RESULT_COLUMNS if dpo else RESULT_COLUMNS
        keys = DPO_RESULT_KEYS if dpo else RESULT_KEYS
        rows = {}
        for event in events:
            data = event.data or {}
            rows[data["step"]] = [data["step"], *(_rounded(data.get(key)) for key in keys)]
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows[step] for step in sorted(rows))
        content = text.getvalue().encode()
        return base64.b64encode(content) if self.settings.result_file_base64 else content

    # --- lost workers -----------------------------------------------------------------------

    def requeue_lost_jobs(self) -> None:
        cutoff = time.time() - self.settings.worker_timeout_seconds
        with self.database.transaction() as connection:
            lost = job_rows.stale_jobs(connection, cutoff, self.id)
        for job in lost:
            log.warning("%s: worker %s of %s went silent", self.id, job.worker_id, job.id)
            if job.status != "running":
                with self.database.transaction() as connection:
                    job_rows.update_job(connection, job.id, held_by=job.worker_id, worker_id=None)
            elif job.attempts >= self.settings.max_job_attempts:
                with self.database.transaction() as connection:
                    fail(
                        connection,
                        job.id,
                        RUNNING,
                        "worker_lost",
                        f"The job's worker stopped answering {job.attempts} times; giving up.",
                        None,
                        worker_id=None,
                    )
            else:
                self._requeue(
                    job.id,
                    "The job's worker stopped answering; the job is queued again",
                    held_by=job.worker_id,
                )

    def _requeue(self, job_id: str, message: str, held_by: str | None = None) -> None:
        with self.database.transaction() as connection:
            held = held_by or self.id
            if transition(connection, job_id, RUNNING, "queued", held_by=held, worker_id=None, control=None):
                add_event(connection, job_id, message, level="warn")
            else:
                job_rows.update_job(connection, job_id, held_by=held, worker_id=None)


class _ValidationProgress:
    """Counts tokens as examples are checked; reports long validations and the totals in events."""

    def __init__(self, database: Database, job_id: str, counter: TokenCounter, settings: Settings) -> None:
        self.database = database
        self.job_id = job_id
        self.counter = counter
        self.max_seq_len = settings.max_seq_len
        self.interval = settings.validation_progress_seconds
        self.examples = self.tokens = self.truncated = 0
        self.last_report = time.monotonic()

    def on_example(self, _line: int, example: dict[str, Any]) -> None:
        length = self.counter.count(example)
        self.examples += 1
        self.tokens += min(length, self.max_seq_len)
        self.truncated += length > self.max_seq_len
        if time.monotonic() - self.last_report > self.interval:
            self.last_report = time.monotonic()
            self._event(f"Validating training file: {self.examples} examples checked so far")

    def report_totals(self, n_epochs: int) -> None:
        if self.truncated:
            self._event(
                f"{self.truncated} example(s) are longer than {self.max_seq_len} tokens and will be truncated "
                "to that length",
                level="warn",
            )
        self._event(
            f"Training file has {self.examples} examples and {self.tokens} tokens; {n_epochs} epochs will train "
            f"on {self.tokens * n_epochs} tokens",
            data={
                "n_examples": self.examples,
                "n_tokens": self.tokens,
                "n_epochs": n_epochs,
                "trained_tokens": self.tokens * n_epochs,
                "n_truncated": self.truncated,
            },
        )

    def _event(self, message: str, level: str = "info", data: dict[str, Any] | None = None) -> None:
        with self.database.transaction() as connection:
            add_event(connection, self.job_id, message, level=level, data=data)


def _rounded(value: object) -> object:
    return "" if value is None else round(float(value), 5)  # type: ignore[arg-type]

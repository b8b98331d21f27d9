"""What the API may do with fine-tuning jobs: create (checking what can be checked at once), list,
retrieve, cancel, pause, resume, and read events and checkpoints."""

from __future__ import annotations

import secrets
import time
from typing import Any

from openft import ids
from openft.config import Settings
from openft.errors import InvalidRequest, NotFound
from openft.protocol.fine_tuning import (
    MAX_SEED,
    CheckpointList,
    CheckpointMetrics,
    CreateJobRequest,
    DpoHyperparameters,
    DpoMethod,
    EventList,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
    Hyperparameters,
    Integration,
    JobError,
    JobList,
    Method,
    SupervisedMethod,
)
from openft.service import capabilities, hyperparameters, wandb_run
from openft.service.catalog import ModelCatalog
from openft.service.files import FileService
from openft.service.lifecycle import ACTIVE, TERMINAL, add_event, transition
from openft.service.models import BaseModelRegistry
from openft.service.naming import organization_id
from openft.service.paging import known_cursor
from openft.service.quotas import Limits
from openft.store import Database
from openft.store import checkpoints as checkpoint_rows
from openft.store import events as event_rows
from openft.store import jobs as job_rows
from openft.store.checkpoints import CheckpointRecord
from openft.store.events import EventRecord
from openft.store.jobs import JobRecord

PAUSE_POLL_SECONDS = 0.2


class JobService:
    def __init__(
        self,
        database: Database,
        files: FileService,
        base_models: BaseModelRegistry,
        catalog: ModelCatalog,
        settings: Settings,
    ) -> None:
        self.database = database
        self.files = files
        self.base_models = base_models
        self.catalog = catalog
        self.settings = settings
        self.quotas = files.quotas

    def create(self, organization: str, request: CreateJobRequest, limits: Limits | None = None) -> FineTuningJob:
        """`limits` receives what the job quotas leave after this one."""
        requested, param_prefix = _requested_hyperparameters(request)
        hyperparameters.check(requested, param_prefix)
        wandb_run.check_integrations(request.integrations, self.settings.wandb_integration)
        base_model, start_from = self._starting_point(organization, request.model)
        base_parameters = self.base_models.parameter_count(base_model)
        required_gpus = capabilities.required_gpus(base_parameters, self.settings)
        self._check_file(organization, request.training_file, "training_file")
        if request.validation_file is not None:
            self._check_file(organization, request.validation_file, "validation_file")
        record = JobRecord(
            id=ids.new_id("ftjob-"),
            organization=organization,
            model=request.model,
            training_file=request.training_file,
            validation_file=request.validation_file,
            status="validating_files",
            created_at=ids.now(),
            finished_at=None,
            estimated_finish=None,
            suffix=request.suffix,
            seed=request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1),
            method_type=request.method.type if request.method else "supervised",
            hyperparameters={"requested": requested.model_dump(), "resolved": None},
            metadata=request.metadata,
            integrations=[integration.model_dump() for integration in request.integrations or []] or None,
            error=None,
            fine_tuned_model=None,
            result_files=[],
            trained_tokens=None,
            control=None,
            worker_id=None,
            heartbeat_at=None,
            attempts=0,
            resume_from=None,
            base_model=base_model,
            start_from=start_from,
            base_parameters=base_parameters,
            required_gpus=required_gpus,
        )
        validating = f"Validating training file: {record.training_file}"
        if record.validation_file:
            validating += f" and validation file: {record.validation_file}"
        with self.database.transaction() as connection:
            self.quotas.check_new_job(connection, organization)
            job_rows.insert_job(connection, record)
            add_event(connection, record.id, f"Created fine-tuning job: {record.id}")
            add_event(connection, record.id, validating)
            unfit = capabilities.unfit_note(connection, base_model, base_parameters, required_gpus, self.settings)
            if unfit:
                add_event(connection, record.id, unfit, level="warn")
            if limits is not None:
                limits.requests = self.quotas.job_allowance(connection, organization)
        return to_wire(record)

    def _starting_point(self, organization: str, model: str) -> tuple[str, str | None]:
        """(the base model trained, the fine-tuned model or checkpoint the job continues, if any)."""
        if self.base_models.find(model) is not None:
            return model, None
        try:  # continued fine-tuning: a model of the caller's organization, or shared with it
            _, base_model = self.catalog.usable_checkpoint(organization, model)
        except NotFound:
            raise InvalidRequest(
                f"Model {model} is not available for fine-tuning or does not exist.",
                param="model",
                code="model_not_available",
            ) from None
        return base_model, model

    def _check_file(self, organization: str, file_id: str, param: str) -> None:
        try:
            record = self.files.get_record(organization, file_id)
        except NotFound:
            raise InvalidRequest(f"File {file_id} not found.", param=param, code="file_not_found") from None
        if record.purpose != "fine-tune":
            raise InvalidRequest(
                f"File {file_id} has purpose '{record.purpose}'; fine-tuning needs a file uploaded with "
                "purpose 'fine-tune'.",
                param=param,
                code="invalid_file_purpose",
            )

    def get_record(self, organization: str, job_id: str) -> JobRecord:
        with self.database.transaction() as connection:
            record = job_rows.get_job(connection, job_id, organization)
        if record is None:
            raise NotFound(f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id", code="not_found")
        return record

    def retrieve(self, organization: str, job_id: str) -> FineTuningJob:
        return to_wire(self.get_record(organization, job_id))

    def list(
        self,
        organization: str,
        *,
        after: str | None,
        limit: int,
        metadata: dict[str, str] | None,
        metadata_is_null: bool,
    ) -> JobList:
        with self.database.transaction() as connection, known_cursor(after, "fine-tuning job"):
            records, has_more = job_rows.list_jobs(
                connection,
                organization,
                after=after,
                limit=limit,
                metadata=metadata,
                metadata_is_null=metadata_is_null,
            )
        return JobList(data=[to_wire(record) for record in records], has_more=has_more)

    def cancel(self, organization: str, job_id: str) -> FineTuningJob:
        job = self.get_record(organization, job_id)
        with self.database.transaction() as connection:
            # A running job is told through `control`; its worker stops the run at the next step.
            cancelled = transition(connection, job_id, ACTIVE, "cancelled", control="cancel")
            if cancelled:
                add_event(connection, job_id, "Fine-tuning job cancelled")
        if cancelled:
            return self.retrieve(organization, job_id)
        raise InvalidRequest(
            f"Job {job_id} has status '{job.status}' and can't be cancelled.",
            param="fine_tuning_job_id",
            code="invalid_state",
        )

    def pause(self, organization: str, job_id: str) -> FineTuningJob:
        job = self.get_record(organization, job_id)
        with self.database.transaction() as connection:
            if job.status == "running":
                asked = job_rows.update_job(connection, job_id, from_statuses=["running"], control="pause")
            else:
                asked = transition(connection, job_id, ["validating_files", "queued"], "paused")
                if asked:
                    add_event(connection, job_id, "Fine-tuning job paused")
        if not asked:
            raise InvalidRequest(
                f"Job {job_id} has status '{job.status}' and can't be paused.",
                param="fine_tuning_job_id",
                code="invalid_state",
            )
        return self._wait_until_not_running(organization, job_id)

    def _wait_until_not_running(self, organization: str, job_id: str) -> FineTuningJob:
        """A running job pauses once its worker has saved it; wait a little for that."""
        deadline = time.monotonic() + self.settings.pause_wait_seconds
        job = self.get_record(organization, job_id)
        while job.status == "running" and time.monotonic() < deadline:
            time.sleep(PAUSE_POLL_SECONDS)
            job = self.get_record(organization, job_id)
        return to_wire(job)

    def resume(self, organization: str, job_id: str) -> FineTuningJob:
        job = self.get_record(organization, job_id)
        validated = job.hyperparameters.get("resolved") is not None
        with self.database.transaction() as connection:
            to_status = "queued" if validated else "validating_files"
            resumed = transition(connection, job_id, ["paused"], to_status, control=None)
            if resumed:
                add_event(connection, job_id, "Fine-tuning job resumed")
        if not resumed:
            raise InvalidRequest(
                f"Job {job_id} has status '{job.status}'; only a paused job can be resumed.",
                param="fine_tuning_job_id",
                code="invalid_state",
            )
        return self.retrieve(organization, job_id)

    def list_events(self, organization: str, job_id: str, *, after: str | None, limit: int) -> EventList:
        self.get_record(organization, job_id)
        with self.database.transaction() as connection, known_cursor(after, "event"):
            records, has_more = event_rows.list_events(connection, job_id, after=after, limit=limit)
        return EventList(data=[event_to_wire(record) for record in records], has_more=has_more)

    def list_checkpoints(self, organization: str, job_id: str, *, after: str | None, limit: int) -> CheckpointList:
        self.get_record(organization, job_id)
        with self.database.transaction() as connection, known_cursor(after, "checkpoint"):
            records, has_more = checkpoint_rows.list_checkpoints(connection, job_id, after=after, limit=limit)
        data = [checkpoint_to_wire(record) for record in records]
        return CheckpointList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=has_more,
        )


def _requested_hyperparameters(request: CreateJobRequest) -> tuple[Hyperparameters, str]:
    """The hyperparameters the request gives for its method, and how it spelled where they are."""
    method = request.method
    if method is not None and method.type == "reinforcement":
        raise InvalidRequest(
            "The 'reinforcement' fine-tuning method is not supported yet; use 'supervised' or 'dpo'.",
            param="method.type",
            code="unsupported_method",
        )
    if method is not None and method.type == "dpo":
        if method.dpo is not None and method.dpo.hyperparameters is not None:
            return method.dpo.hyperparameters, "method.dpo.hyperparameters"
        # The deprecated top-level field, with DPO's own beta.
        given = request.hyperparameters.model_dump() if request.hyperparameters else {}
        return DpoHyperparameters(**given), "hyperparameters"
    supervised = method.supervised if method else None
    if supervised is not None and supervised.hyperparameters is not None:
        return supervised.hyperparameters, "method.supervised.hyperparameters"
    return request.hyperparameters or Hyperparameters(), "hyperparameters"


def to_wire(record: JobRecord) -> FineTuningJob:
    shown: dict[str, Any] = record.hyperparameters.get("resolved") or record.hyperparameters["requested"]
    concrete = {key: "auto" if value is None else value for key, value in shown.items()}
    if record.method_type == "dpo":
        # As OpenAI shows DPO jobs: the values under method.dpo, top-level hyperparameters null.
        method = Method(type="dpo", dpo=DpoMethod(hyperparameters=DpoHyperparameters(**concrete)))
        top_level: Hyperparameters | None = None
    else:
        top_level = Hyperparameters(**concrete)
        method = Method(type="supervised", supervised=SupervisedMethod(hyperparameters=top_level))
    return FineTuningJob(
        id=record.id,
        created_at=record.created_at,
        error=JobError(**record.error) if record.error else None,
        fine_tuned_model=record.fine_tuned_model,
        finished_at=record.finished_at,
        hyperparameters=top_level,
        model=record.model,
        organization_id=organization_id(record.organization),
        result_files=record.result_files,
        seed=record.seed,
        status=record.status,
        trained_tokens=record.trained_tokens,
        training_file=record.training_file,
        validation_file=record.validation_file,
        estimated_finish=record.estimated_finish if record.status not in TERMINAL else None,
        integrations=[Integration(**item) for item in record.integrations] if record.integrations else [],
        metadata=record.metadata,
        method=method,
        user_provided_suffix=record.suffix,
    )


def event_to_wire(record: EventRecord) -> FineTuningJobEvent:
    return FineTuningJobEvent(
        id=record.id,
        created_at=record.created_at,
        level=record.level,
        message=record.message,
        type=record.type,
        data=record.data,
    )


def checkpoint_to_wire(record: CheckpointRecord) -> FineTuningJobCheckpoint:
    return FineTuningJobCheckpoint(
        id=record.id,
        created_at=record.created_at,
        fine_tuned_model_checkpoint=record.name,
        fine_tuning_job_id=record.job_id,
        metrics=CheckpointMetrics(**record.metrics),
        step_number=record.step_number,
    )

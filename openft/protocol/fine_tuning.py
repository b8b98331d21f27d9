"""Fine-tuning jobs, events and checkpoints, as `openai.types.fine_tuning` has them."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from openft.protocol.files import MAX_ID_CHARS
from openft.protocol.models import MAX_MODEL_CHARS

Auto = Literal["auto"]
JobStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled", "paused"]
SUFFIX_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_METADATA_PAIRS = 16
MAX_SEED = 2_147_483_647
MAX_WANDB_NAME_CHARS = 256
MAX_WANDB_TAG_CHARS = 64  # W&B's own limit


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="ignore")

    batch_size: Auto | int | None = "auto"
    learning_rate_multiplier: Auto | float | None = "auto"
    n_epochs: Auto | int | None = "auto"

    @field_validator("batch_size", "learning_rate_multiplier", "n_epochs", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):  # JSON true would otherwise pass as the number 1
            raise ValueError("must be a number or 'auto', not a boolean")
        return value


class SupervisedMethod(BaseModel):
    model_config = ConfigDict(extra="ignore")

    hyperparameters: Hyperparameters | None = None


class DpoHyperparameters(Hyperparameters):
    beta: Auto | float | None = "auto"

    @field_validator("beta", mode="before")
    @classmethod
    def _beta_not_a_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a number or 'auto', not a boolean")
        return value


class DpoMethod(BaseModel):
    model_config = ConfigDict(extra="ignore")

    hyperparameters: DpoHyperparameters | None = None


class Method(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None
    reinforcement: dict[str, Any] | None = None


class WandbIntegration(BaseModel):
    model_config = ConfigDict(extra="ignore")

    project: str
    entity: str | None = None
    name: str | None = None
    tags: list[str] | None = None


class Integration(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["wandb"]
    wandb: WandbIntegration


class _RequestedWandbIntegration(WandbIntegration):
    """Bounded where a request gives one; jobs read back what they were stored with, unbounded."""

    project: str = Field(max_length=MAX_WANDB_NAME_CHARS)
    entity: str | None = Field(None, max_length=MAX_WANDB_NAME_CHARS)
    name: str | None = Field(None, max_length=MAX_WANDB_NAME_CHARS)
    tags: list[Annotated[str, Field(max_length=MAX_WANDB_TAG_CHARS)]] | None = Field(None, max_length=50)


class RequestedIntegration(Integration):
    wandb: _RequestedWandbIntegration


class CreateJobRequest(BaseModel):
    """The body of `POST /v1/fine_tuning/jobs`. Unknown fields are ignored, as new SDKs send them."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(max_length=MAX_MODEL_CHARS)
    training_file: str = Field(max_length=MAX_ID_CHARS)
    validation_file: str | None = Field(None, max_length=MAX_ID_CHARS)
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: str | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    metadata: dict[str, str] | None = None
    integrations: list[RequestedIntegration] | None = Field(None, max_length=5)

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, suffix: str | None) -> str | None:
        if suffix is not None and not SUFFIX_PATTERN.match(suffix):
            raise ValueError("suffix must be 1 to 64 characters of letters, digits, '-' and '_'")
        return suffix

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, metadata: dict[str, str] | None) -> dict[str, str] | None:
        if metadata is None:
            return None
        if len(metadata) > MAX_METADATA_PAIRS:
            raise ValueError(f"metadata holds at most {MAX_METADATA_PAIRS} pairs")
        for key, value in metadata.items():
            if len(key) > 64:
                raise ValueError(f"metadata key {key[:20]!r}… is longer than 64 characters")
            if len(value) > 512:
                raise ValueError(f"metadata value of {key!r} is longer than 512 characters")
            if "\x00" in key or "\x00" in value:  # PostgreSQL's JSON can't hold it as text: refused everywhere
                raise ValueError(f"metadata key {key[:20]!r} or its value holds a NUL character (\\u0000)")
        return metadata


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None
    fine_tuned_model: str | None
    finished_at: int | None
    hyperparameters: Hyperparameters | None  # null for DPO jobs, as OpenAI shows them
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: JobStatus
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    estimated_finish: int | None = None
    integrations: list[Integration] | None = None
    metadata: dict[str, str] | None = None
    method: Method
    user_provided_suffix: str | None = None


class FineTuningJobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any] | None


class CheckpointMetrics(BaseModel):
    step: float | None = None
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class FineTuningJobCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobEvent]
    has_more: bool


class CheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobCheckpoint]
    first_id: str | None
    last_id: str | None
    has_more: bool

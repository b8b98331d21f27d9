"""Every tunable of openft, read from `OPENFT_*` environment variables with embedded defaults."""

from __future__ import annotations

import tempfile
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_ORGANIZATION = "personal"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENFT_", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(Path(".openft"), description="Database, blobs and models live here.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite in data_dir.")
    blob_url: str | None = Field(
        None,
        description="Where bytes (files, Upload parts, checkpoints, result files, resume states) live: "
        "`s3://bucket/prefix` for S3-compatible object storage (endpoint and credentials from the usual "
        "AWS_* variables); default: `blobs/` in data_dir.",
    )
    blob_part_bytes: int = Field(
        8 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        description="Bytes of one part of an object storage multipart upload: a writer holds at most one "
        "part in memory; blobs larger than it are sent in parts (S3's smallest part is 5 MiB).",
    )
    api_keys: str = Field(
        "",
        description="Comma-separated `key:organization` pairs. Empty: single-user, loopback only.",
    )
    admin_keys: str = Field(
        "",
        description="Comma-separated `key:organization` pairs of admin keys: also API keys of their "
        "organization, and when any is set only they may manage checkpoint permissions.",
    )
    base_models: str = Field(
        "",
        description="Comma-separated `name=path` pairs of local Hugging Face model directories.",
    )
    embedded_model_id: str = Field("smollm2-135m-instruct", description="Id of the embedded base model.")
    models_dir_override: Path | None = Field(
        None,
        alias="OPENFT_MODELS_DIR",
        description="Where converted base models are kept; default: `models/` in the data dir.",
    )
    host: str = Field("127.0.0.1", description="Address `openft serve` listens on (`--host` overrides).")
    port: int = Field(8000, description="Port `openft serve` listens on (`--port` overrides).")

    max_upload_bytes: int = Field(512 * 1024 * 1024, description="Largest file accepted by POST /files.")
    max_json_body_bytes: int = Field(16 * 1024 * 1024, ge=1, description="Largest JSON request body (413 over it).")
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest request line plus headers, in bytes (431 over it)."
    )
    max_header_count: int = Field(100, ge=10, description="Most header fields in one request (431 over it).")
    request_header_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="Time a client has to send its request line and headers, in total; then 408 and the "
        "connection is closed (a connection that sends nothing is just closed).",
    )
    request_read_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description="Longest silence while a client sends a request body (idle time between reads, not a "
        "total); then 408, the connection is closed and a partial upload discarded.",
    )
    max_upload_part_bytes: int = Field(64 * 1024 * 1024, description="Largest part of an Upload.")
    max_upload_total_bytes: int = Field(8 * 1024**3, description="Largest file assembled by an Upload.")
    upload_expiry_seconds: int = Field(3600, description="An Upload not completed by then expires.")
    log_level: str = Field("INFO", description="Log level of the server, workers and training runs.")

    embedded_worker: bool = Field(True, description="`openft serve` also runs one worker.")
    worker_poll_seconds: float = Field(1.0, description="How often an idle worker looks for work.")
    worker_heartbeat_seconds: float = Field(5.0, description="How often a worker proves it is alive.")
    worker_timeout_seconds: float = Field(60.0, description="Silence after which a worker is presumed dead.")
    max_job_attempts: int = Field(
        3, description="Training runs a job gets before failing for lost workers or killed training processes."
    )
    worker_gpus: int | None = Field(
        None, ge=0, description="GPUs a worker advertises; default: the CUDA devices it sees (0 training on a CPU)."
    )
    worker_memory_bytes: int | None = Field(
        None,
        ge=0,
        description="Memory a worker advertises: it claims only jobs whose base model fits it; default: on CUDA the "
        "smallest visible GPU's, on a CPU the machine's RAM (or its cgroup limit).",
    )
    gpu_required_above_parameters: int = Field(
        0,
        ge=0,
        description="Jobs on base models with more parameters than this train only on workers with a GPU; 0: "
        "any worker whose memory fits.",
    )
    stop_grace_seconds: float = Field(30.0, description="Wait for a cancelled run to stop before killing it.")
    pause_wait_seconds: float = Field(30.0, description="How long POST /pause waits for the run to save.")

    gc_interval_seconds: float = Field(
        600.0, ge=0, description="How often each worker collects garbage (temporaries, orphans, expired); 0: never."
    )
    gc_grace_seconds: float = Field(
        3600.0, ge=0, description="Temporaries and blobs without a row younger than this are never collected."
    )
    jobs_per_hour: int = Field(
        10, ge=1, description="Fine-tuning jobs one organization may create per hour (OpenAI: 10); more get 429."
    )
    max_active_jobs: int = Field(
        6, ge=1, description="Jobs one organization may have validating, queued or running at once; more get 429."
    )
    uploads_per_hour: int = Field(
        100, ge=1, description="Files and Uploads one organization may create per hour (OpenAI: 100); more get 429."
    )
    max_stored_bytes: int = Field(
        100 * 1024**3,
        ge=1,
        description="Bytes one organization may hold in live files and pending Uploads (OpenAI had 100 GB per "
        "organization); a file or Upload that would go over gets 400 storage_quota_exceeded.",
    )
    min_training_examples: int = Field(10, description="Fewer examples fail validation.")
    validation_progress_seconds: float = Field(10.0, description="Interval of progress events while validating.")
    base_learning_rate: float = Field(1e-4, description="LoRA learning rate = this x learning_rate_multiplier.")
    auto_learning_rate_multiplier: float = Field(2.0, description="What learning_rate_multiplier 'auto' means.")
    lora_r: int = Field(8, description="Rank of the LoRA adapters.")
    lora_alpha: int = Field(16, description="LoRA scaling numerator (the scale is alpha / r).")
    max_seq_len: int = Field(2048, description="Training examples are truncated to this many tokens.")
    eval_interval_steps: int = Field(10, description="Steps between mini-batch validation losses.")
    checkpoints_kept: int = Field(3, description="Epoch checkpoints kept per job, newest first.")
    resume_save_seconds: float = Field(
        60.0,
        description="A running job saves its resume state at every checkpoint and at least this often, so a "
        "crash or a lost worker costs at most this much training; 0: at checkpoints only.",
    )
    training_device: str = Field("auto", description="'auto' (CUDA when present), 'cpu' or 'cuda'.")
    warm_trainer_idle_seconds: float = Field(
        600.0,
        ge=0,
        description="A worker keeps a training process ready (libraries imported, the base model of the job it "
        "is validating or last trained loaded), so a claimed job starts training at once; the process exits after "
        "waiting this long, releasing its memory. 0: every run starts a fresh process.",
    )
    training_precision: str = Field(
        "auto",
        description="Number format of training: 'bf16' (a LoRA job's frozen base in bfloat16, matmuls under "
        "bfloat16 autocast, trainable weights, optimizer state and loss in float32), 'fp32', or 'auto': bf16 on CUDA "
        "GPUs that support it and on CPUs whose bfloat16 matmuls measure at least 1.25x as fast as float32 (a check of "
        "about 0.1 s when a training process starts), else fp32.",
    )
    training_threads: int = Field(
        0,
        ge=0,
        description="CPU threads of each training process (torch's intra-op threads). 0: every core while no "
        "chat completion is generated on this host's CPU, half of them while one is (see OPENFT_CPU_SHARE_DIR): "
        "both at every core slow each other 3-4x (bench/shared_cpu.py, docs/training.md). A number fixes it.",
    )
    training_processes: str = Field(
        "auto",
        pattern=r"^(auto|[1-9][0-9]*)$",
        description="Processes that train one job together (torch.distributed DDP: gloo on a CPU, NCCL with one GPU "
        "each), each on its share of every batch: 'auto' is one per GPU on CUDA and one on a CPU; a number forces "
        "that many. The job's batch_size stays the global batch.",
    )
    inference_device: str = Field("auto", description="'auto' (CUDA when present), 'cpu' or 'cuda' for chat.")
    serving_threads: int = Field(
        0,
        ge=0,
        description="CPU threads that generate chat completions in the API process (torch's intra-op threads). "
        "0: every core while no training run uses this host's CPU, half of them while one does (see "
        "OPENFT_TRAINING_THREADS). A number fixes it.",
    )
    cpu_share_dir: Path | None = Field(
        None,
        description="A directory on this host where training processes and chat generation on the CPU say that "
        "they are busy, so that each takes half the cores while the other is busy and every core otherwise "
        "(engine/cpu_share.py). Every openft process of one host should see the same one; default: "
        "openft-cpu-share in the system's temporary directory.",
    )
    inference_dtype: str = Field(
        "auto",
        description="Number format of served models: 'auto' (bfloat16 on CUDA, float32 on a CPU), 'float32', "
        "'bfloat16' or 'float16'.",
    )
    preload_models: str = Field(
        "all",
        description="Base models loaded for chat when `openft serve` starts, in the background: 'all', a "
        "comma-separated list of ids, or empty (each loads on its first request).",
    )
    max_loaded_adapters: int = Field(8, ge=1, description="LoRA adapters kept in memory per base model (LRU).")
    max_batch_size: int = Field(
        16, ge=1, description="Sequences (choices) decoded together in one forward pass, per base model."
    )
    prefill_chunk_tokens: int = Field(
        256, ge=1, description="Prompt tokens computed per scheduler step while other sequences decode."
    )
    max_requests_in_flight: int = Field(
        256, ge=1, description="Chat and completion requests admitted at once, all organizations; more get 429."
    )
    max_requests_in_flight_per_organization: int = Field(
        64, ge=1, description="Chat and completion requests one organization may have admitted at once; more get 429."
    )
    max_tokens_per_request: int = Field(
        131072,
        ge=1,
        description="Most tokens one request may ask for: prompt plus completion budget, times n, summed over prompts.",
    )
    max_completion_prompts: int = Field(64, ge=1, description="Most prompts in one POST /v1/completions.")
    default_max_tokens: int = Field(
        512,
        ge=0,
        description="Completion tokens when a chat request sets no max_tokens (OpenAI: up to the context length, "
        "which takes minutes on a CPU); 0: up to the context length.",
    )
    max_concurrent_exports: int = Field(
        1,
        ge=1,
        description="Model exports (GET /v1/models/{model}/export) built at once; each holds a copy of the base "
        "model in memory while it merges. More get 429 with Retry-After.",
    )
    result_file_base64: bool = Field(True, description="Serve step_metrics.csv base64-encoded, as OpenAI.")
    wandb_integration: Literal["auto", "enabled", "disabled"] = Field(
        "auto",
        description="Whether jobs may have a `wandb` integration: 'auto' (when W&B is configured: WANDB_API_KEY, "
        "a `wandb login` key in ~/.netrc, or WANDB_MODE=offline; not with WANDB_MODE=disabled), 'enabled' "
        "(always) or 'disabled' (never); refused ones get 400 integration_not_available.",
    )

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'openft.db').resolve()}"

    @cached_property
    def api_key_organizations(self) -> dict[str, str]:
        """Maps each key of OPENFT_API_KEYS to its organization."""
        return _key_organizations(self.api_keys, "OPENFT_API_KEYS")

    @cached_property
    def admin_key_organizations(self) -> dict[str, str]:
        """Maps each key of OPENFT_ADMIN_KEYS to its organization."""
        return _key_organizations(self.admin_keys, "OPENFT_ADMIN_KEYS")

    @cached_property
    def key_organizations(self) -> dict[str, str]:
        """Every key a caller may authenticate with (admin keys are API keys too), to its organization."""
        for key, organization in self.admin_key_organizations.items():
            other = self.api_key_organizations.get(key, organization)
            if other != organization:
                raise ValueError(
                    f"OPENFT_ADMIN_KEYS gives a key of OPENFT_API_KEYS another organization ({organization!r}, "
                    f"not {other!r})"
                )
        return {**self.api_key_organizations, **self.admin_key_organizations}

    @property
    def organizations(self) -> set[str]:
        """The organizations this server knows: those of its keys, or the one of single-user mode."""
        return set(self.key_organizations.values()) or {DEFAULT_ORGANIZATION}

    @cached_property
    def registered_base_models(self) -> dict[str, Path]:
        """Maps each model id named in OPENFT_BASE_MODELS to its directory."""
        models: dict[str, Path] = {}
        for item in filter(None, (part.strip() for part in self.base_models.split(","))):
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise ValueError(f"OPENFT_BASE_MODELS entry {item!r} is not `name=path`")
            models[name.strip()] = Path(path.strip()).expanduser()
        return models

    @property
    def preload_model_ids(self) -> list[str]:
        return [name.strip() for name in self.preload_models.split(",") if name.strip()]

    @property
    def single_user(self) -> bool:
        return not self.key_organizations

    @property
    def resolved_cpu_share_dir(self) -> Path:
        # Not under data_dir: that may be shared by several hosts, and this is about one host's CPU.
        return self.cpu_share_dir or Path(tempfile.gettempdir()) / "openft-cpu-share"

    @property
    def blobs_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def models_dir(self) -> Path:
        return self.models_dir_override or self.data_dir / "models"

    @property
    def exports_dir(self) -> Path:
        """Exports are built here, then streamed and removed (on the data disk: they are model-sized)."""
        return self.data_dir / "exports"


def _key_organizations(value: str, variable: str) -> dict[str, str]:
    """`key:organization` pairs, comma-separated (a key may hold colons: the last one splits)."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        key, sep, organization = item.rpartition(":")
        if not sep or not key or not organization:
            raise ValueError(f"{variable} entry {item!r} is not `key:organization`")
        pairs[key] = organization
    return pairs

"""Tables, as SQLAlchemy Core. Alembic migrations create them; this module is the one description.

Every table has an integer `seq` that orders rows in insertion order, so cursor pagination stays
stable when many rows share the same `created_at` second.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

files = Table(
    "files",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("organization", String(128), nullable=False),
    Column("filename", Text, nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Column("status", String(16), nullable=False),
    Column("status_details", Text, nullable=True),
    Column("blob_key", Text, nullable=False),
    Index("ix_files_organization_seq", "organization", "seq"),
)

uploads = Table(
    "uploads",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("organization", String(128), nullable=False),
    Column("filename", Text, nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("mime_type", String(255), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("file_expires_at", BigInteger, nullable=True),
    Column("status", String(16), nullable=False),
    Column("file_id", String(64), nullable=True),
)

upload_parts = Table(
    "upload_parts",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("upload_id", String(64), ForeignKey("uploads.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("blob_key", Text, nullable=False),
    Index("ix_upload_parts_upload_id", "upload_id"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("organization", String(128), nullable=False),
    Column("model", Text, nullable=False),
    Column("training_file", String(64), nullable=False),
    Column("validation_file", String(64), nullable=True),
    Column("status", String(32), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger, nullable=True),
    Column("estimated_finish", BigInteger, nullable=True),
    Column("suffix", String(64), nullable=True),
    Column("seed", BigInteger, nullable=False),
    Column("method_type", String(32), nullable=False),
    Column("hyperparameters", Text, nullable=False),
    Column("metadata", JSON(none_as_null=True), nullable=True),
    Column("integrations", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("fine_tuned_model", Text, nullable=True),
    Column("result_files", Text, nullable=False),
    Column("trained_tokens", BigInteger, nullable=True),
    Column("control", String(16), nullable=True),
    Column("worker_id", String(64), nullable=True),
    Column("heartbeat_at", Float, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("resume_from", Text, nullable=True),
    Column("base_model", Text, nullable=True),  # what the job trains: `model`, or the base of an ft: model
    Column("start_from", Text, nullable=True),  # continued fine-tuning: the fine-tuned model or checkpoint
    # What the job needs of the worker that trains it (service/capabilities.py): its base model's
    # parameter count (NULL: unknown, any worker), and GPUs (0: any device).
    Column("base_parameters", BigInteger, nullable=True),
    Column("required_gpus", Integer, nullable=False, server_default="0"),
    Index("ix_jobs_organization_seq", "organization", "seq"),
    Index("ix_jobs_status", "status"),
)

job_events = Table(
    "job_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("job_id", String(64), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("level", String(8), nullable=False),
    Column("message", Text, nullable=False),
    Column("type", String(16), nullable=False),
    Column("data", Text, nullable=False),
    Index("ix_job_events_job_id_seq", "job_id", "seq"),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("job_id", String(64), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("organization", String(128), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("name", Text, nullable=False, unique=True),
    Column("step_number", Integer, nullable=False),
    Column("metrics", Text, nullable=False),
    Column("blob_key", Text, nullable=False),
    Index("ix_checkpoints_job_id_seq", "job_id", "seq"),
)

# A checkpoint (or fine-tuned model) shared with another organization: the wire's `project_id`.
checkpoint_permissions = Table(
    "checkpoint_permissions",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("checkpoint_id", String(64), ForeignKey("checkpoints.id", ondelete="CASCADE"), nullable=False),
    Column("organization", String(128), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("checkpoint_id", "organization", name="uq_checkpoint_permissions_checkpoint_organization"),
    Index("ix_checkpoint_permissions_organization", "organization"),
)

# The workers alive (or lately so) and what each can run; a worker's row goes when it stops, or
# when it has been silent for long (service/worker.py).
workers = Table(
    "workers",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("host", Text, nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("capabilities", JSON, nullable=False),  # {"device": "cpu"|"cuda", "gpus": n, "memory_bytes": n}
    Index("ix_workers_heartbeat_at", "heartbeat_at"),
)

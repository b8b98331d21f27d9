"""Fine-tuning jobs, their events and checkpoints.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("organization", sa.String(128), nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("training_file", sa.String(64), nullable=False),
        sa.Column("validation_file", sa.String(64), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("finished_at", sa.BigInteger, nullable=True),
        sa.Column("estimated_finish", sa.BigInteger, nullable=True),
        sa.Column("suffix", sa.String(64), nullable=True),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("method_type", sa.String(32), nullable=False),
        sa.Column("hyperparameters", sa.Text, nullable=False),
        sa.Column("metadata", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("integrations", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("fine_tuned_model", sa.Text, nullable=True),
        sa.Column("result_files", sa.Text, nullable=False),
        sa.Column("trained_tokens", sa.BigInteger, nullable=True),
        sa.Column("control", sa.String(16), nullable=True),
        sa.Column("worker_id", sa.String(64), nullable=True),
        sa.Column("heartbeat_at", sa.Float, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("resume_from", sa.Text, nullable=True),
    )
    op.create_index("ix_jobs_organization_seq", "jobs", ["organization", "seq"])
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_table(
        "job_events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_index("ix_job_events_job_id_seq", "job_events", ["job_id", "seq"])
    op.create_table(
        "checkpoints",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("organization", sa.String(128), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("step_number", sa.Integer, nullable=False),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("blob_key", sa.Text, nullable=False),
    )
    op.create_index("ix_checkpoints_job_id_seq", "checkpoints", ["job_id", "seq"])


def downgrade() -> None:
    op.drop_table("checkpoints")
    op.drop_table("job_events")
    op.drop_table("jobs")

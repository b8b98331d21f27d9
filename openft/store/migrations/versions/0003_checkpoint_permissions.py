"""Checkpoint permissions: a checkpoint or fine-tuned model shared with another organization.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "checkpoint_permissions",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("checkpoint_id", sa.String(64), sa.ForeignKey("checkpoints.id", ondelete="CASCADE"), nullable=False),
        sa.Column("organization", sa.String(128), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("checkpoint_id", "organization", name="uq_checkpoint_permissions_checkpoint_organization"),
    )
    op.create_index("ix_checkpoint_permissions_organization", "checkpoint_permissions", ["organization"])


def downgrade() -> None:
    op.drop_table("checkpoint_permissions")

"""Jobs that continue a fine-tuned model: the base model they train, and what they start from.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("base_model", sa.Text, nullable=True))
        batch.add_column(sa.Column("start_from", sa.Text, nullable=True))
    op.execute("UPDATE jobs SET base_model = model")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("start_from")
        batch.drop_column("base_model")

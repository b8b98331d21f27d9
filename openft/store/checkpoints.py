"""Rows of checkpoints: each names a loadable model saved under the blob store."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, func, insert, select, update

from openft.store.paging import fetch_page
from openft.store.records import row_values
from openft.store.schema import checkpoints, jobs


@dataclass(frozen=True)
class CheckpointRecord:
    id: str
    job_id: str
    organization: str
    created_at: int
    name: str
    step_number: int
    metrics: dict[str, Any]
    blob_key: str

    @classmethod
    def from_row(cls, row: RowMapping) -> CheckpointRecord:
        return cls(**row_values(cls, row, json_columns=("metrics",)))


def insert_checkpoint(connection: Connection, record: CheckpointRecord) -> None:
    connection.execute(insert(checkpoints).values(**{**record.__dict__, "metrics": json.dumps(record.metrics)}))


def list_checkpoints(
    connection: Connection, job_id: str, *, after: str | None, limit: int
) -> tuple[list[CheckpointRecord], bool]:
    page = fetch_page(connection, checkpoints, [checkpoints.c.job_id == job_id], after=after, limit=limit)
    return [CheckpointRecord.from_row(row) for row in page.rows], page.has_more


def all_checkpoints(connection: Connection, job_id: str) -> list[CheckpointRecord]:
    """Oldest first."""
    rows = connection.execute(
        select(checkpoints).where(checkpoints.c.job_id == job_id).order_by(checkpoints.c.seq)
    ).mappings()
    return [CheckpointRecord.from_row(row) for row in rows]


def get_checkpoint_by_name(connection: Connection, name: str) -> CheckpointRecord | None:
    row = connection.execute(select(checkpoints).where(checkpoints.c.name == name)).mappings().first()
    return CheckpointRecord.from_row(row) if row else None


def rename_checkpoint(connection: Connection, checkpoint_id: str, name: str) -> None:
    connection.execute(update(checkpoints).where(checkpoints.c.id == checkpoint_id).values(name=name))


def delete_checkpoint(connection: Connection, checkpoint_id: str) -> None:
    connection.execute(delete(checkpoints).where(checkpoints.c.id == checkpoint_id))


def find_model(connection: Connection, name: str) -> tuple[CheckpointRecord, str] | None:
    """The checkpoint named `name` and the base model its job trained, if it exists."""
    row = (
        connection.execute(
            select(checkpoints, func.coalesce(jobs.c.base_model, jobs.c.model).label("base_model"))
            .join(jobs, jobs.c.id == checkpoints.c.job_id)
            .where(checkpoints.c.name == name)
        )
        .mappings()
        .first()
    )
    return (CheckpointRecord.from_row(row), row["base_model"]) if row else None


def fine_tuned_models(connection: Connection, organization: str) -> list[CheckpointRecord]:
    """The final checkpoints of an organization's succeeded jobs: its fine-tuned models, oldest first."""
    rows = connection.execute(
        select(checkpoints)
        .join(jobs, jobs.c.id == checkpoints.c.job_id)
        .where(
            checkpoints.c.organization == organization,
            jobs.c.status == "succeeded",
            checkpoints.c.name == jobs.c.fine_tuned_model,
        )
        .order_by(checkpoints.c.seq)
    ).mappings()
    return [CheckpointRecord.from_row(row) for row in rows]

"""Rows of workers: each says what it can run and proves it is alive with a heartbeat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, insert, select, update

from openft.store.records import row_values
from openft.store.schema import workers


@dataclass(frozen=True)
class WorkerRecord:
    id: str
    host: str
    started_at: int
    heartbeat_at: float
    capabilities: dict[str, Any]

    @classmethod
    def from_row(cls, row: RowMapping) -> WorkerRecord:
        return cls(**row_values(cls, row))


def register_worker(connection: Connection, record: WorkerRecord) -> None:
    connection.execute(insert(workers).values(**record.__dict__))


def beat_worker(connection: Connection, worker_id: str, heartbeat_at: float) -> bool:
    """False when the row is gone (another worker pruned it as silent): the caller registers again."""
    result = connection.execute(update(workers).where(workers.c.id == worker_id).values(heartbeat_at=heartbeat_at))
    return result.rowcount == 1


def remove_worker(connection: Connection, worker_id: str) -> None:
    connection.execute(delete(workers).where(workers.c.id == worker_id))


def prune_workers(connection: Connection, heartbeat_before: float) -> int:
    """Removes the rows of workers silent since `heartbeat_before`; how many."""
    return connection.execute(delete(workers).where(workers.c.heartbeat_at < heartbeat_before)).rowcount


def live_workers(connection: Connection, heartbeat_since: float) -> list[WorkerRecord]:
    """Workers that have beaten since `heartbeat_since`, oldest first."""
    rows = connection.execute(
        select(workers).where(workers.c.heartbeat_at >= heartbeat_since).order_by(workers.c.seq)
    ).mappings()
    return [WorkerRecord.from_row(row) for row in rows]

"""Rows of job events, newest first on the wire."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, func, insert, select

from openft.store.paging import fetch_page
from openft.store.records import row_values
from openft.store.schema import job_events


@dataclass(frozen=True)
class EventRecord:
    id: str
    job_id: str
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: RowMapping) -> EventRecord:
        return cls(**row_values(cls, row, json_columns=("data",)))


def insert_event(connection: Connection, record: EventRecord) -> None:
    values = {**record.__dict__, "data": json.dumps(record.data)}
    connection.execute(insert(job_events).values(**values))


def list_events(
    connection: Connection, job_id: str, *, after: str | None, limit: int
) -> tuple[list[EventRecord], bool]:
    page = fetch_page(connection, job_events, [job_events.c.job_id == job_id], after=after, limit=limit)
    return [EventRecord.from_row(row) for row in page.rows], page.has_more


def metrics_events(connection: Connection, job_id: str) -> list[EventRecord]:
    """Every metrics event of a job, oldest first."""
    rows = connection.execute(
        select(job_events)
        .where(job_events.c.job_id == job_id, job_events.c.type == "metrics")
        .order_by(job_events.c.seq)
    ).mappings()
    return [EventRecord.from_row(row) for row in rows]


def delete_events(connection: Connection, event_ids: list[str]) -> None:
    if event_ids:
        connection.execute(delete(job_events).where(job_events.c.id.in_(event_ids)))


def message_events(connection: Connection, job_id: str, prefix: str) -> list[EventRecord]:
    """A job's message events whose message starts with `prefix` (case and all), oldest first."""
    rows = connection.execute(
        select(job_events)
        .where(
            job_events.c.job_id == job_id,
            job_events.c.type == "message",
            # Not LIKE: SQLite's ignores the case of ASCII letters, PostgreSQL's doesn't.
            func.substr(job_events.c.message, 1, len(prefix)) == prefix,
        )
        .order_by(job_events.c.seq)
    ).mappings()
    return [EventRecord.from_row(row) for row in rows]

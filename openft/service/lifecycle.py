"""The job state machine and the events that narrate it.

Every transition is one conditional UPDATE (`store.jobs.update_job` with the statuses it may leave),
written in the same transaction as its event, so two actors racing on a job can't both win and a
status never changes without its event.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from openft import ids
from openft.store import events as event_rows
from openft.store import jobs as job_rows
from openft.store.events import EventRecord

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})

ALLOWED_FROM: dict[str, frozenset[str]] = {
    "queued": frozenset({"validating_files", "running", "paused"}),
    "running": frozenset({"queued"}),
    "succeeded": frozenset({"running"}),
    "failed": frozenset({"validating_files", "queued", "running"}),
    "cancelled": frozenset({"validating_files", "queued", "running", "paused"}),
    "paused": frozenset({"validating_files", "queued", "running"}),
    "validating_files": frozenset({"paused"}),
}


def add_event(
    connection: Connection,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
    empty_data: bool = True,
) -> None:
    """Message events carry `data: {}` as OpenAI's do, except where `empty_data` is False (`null`)."""
    payload = data if data is not None else ({} if empty_data else None)
    event_rows.insert_event(
        connection,
        EventRecord(
            id=ids.new_id("ftevent-"),
            job_id=job_id,
            created_at=ids.now(),
            level=level,
            message=message,
            type=type,
            data=payload,
        ),
    )


def transition(
    connection: Connection,
    job_id: str,
    to_status: str,
    *,
    held_by: str | None = None,
    **values: Any,
) -> bool:
    """Moves the job to `to_status` if its current status allows it (and, when given, the worker
    `held_by` still holds it); False if it no longer does."""
    if to_status in TERMINAL:
        values.setdefault("finished_at", ids.now())
        values.setdefault("estimated_finish", None)
    return job_rows.update_job(
        connection,
        job_id,
        from_statuses=ALLOWED_FROM[to_status],
        held_by=held_by,
        status=to_status,
        **values,
    )


def fail(connection: Connection, job_id: str, code: str, message: str, param: str | None, **values: Any) -> bool:
    """Ends the job `failed` with `error` set and an error-level event saying the same."""
    failed = transition(
        connection, job_id, "failed", error={"code": code, "message": message, "param": param}, **values
    )
    if failed:
        add_event(connection, job_id, message, level="error")
    return failed

"""The job state machine and the events that narrate it.

`TRANSITIONS` is the one from→to table. Every status change goes through `transition`, naming
the statuses its caller expects to leave (each pair checked against the table), as one
conditional UPDATE written in the same transaction as its event: two actors racing on a job
can't both win, a status never changes without its event, and an actor never moves a job out of
a status it didn't expect (a validator finishing never un-pauses a job paused meanwhile).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection

from openft import ids
from openft.store import events as event_rows
from openft.store import jobs as job_rows
from openft.store.events import EventRecord

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})

TRANSITIONS: dict[str, frozenset[str]] = {
    "validating_files": frozenset({"queued", "failed", "cancelled", "paused"}),
    "queued": frozenset({"running", "failed", "cancelled", "paused"}),
    "running": frozenset({"succeeded", "failed", "cancelled", "paused", "queued"}),  # queued: worker lost
    "paused": frozenset({"queued", "validating_files", "cancelled"}),  # validating_files: paused before it
}
ACTIVE = frozenset(TRANSITIONS)  # every status a job can leave


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
    from_statuses: Iterable[str],
    to_status: str,
    *,
    held_by: str | None = None,
    **values: Any,
) -> bool:
    """Moves the job to `to_status` if it is in one of `from_statuses` (and, when given, the worker
    `held_by` still holds it); False if it isn't. ValueError for a pair the table doesn't have."""
    from_statuses = frozenset(from_statuses)
    illegal = sorted(status for status in from_statuses if to_status not in TRANSITIONS.get(status, ()))
    if illegal or not from_statuses:
        raise ValueError(f"no transition from {illegal or 'nothing'} to {to_status}")
    if to_status in TERMINAL:
        values.setdefault("finished_at", ids.now())
        values.setdefault("estimated_finish", None)
    return job_rows.update_job(
        connection,
        job_id,
        from_statuses=from_statuses,
        held_by=held_by,
        status=to_status,
        **values,
    )


def fail(
    connection: Connection,
    job_id: str,
    from_statuses: Iterable[str],
    code: str,
    message: str,
    param: str | None,
    **values: Any,
) -> bool:
    """Ends the job `failed` with `error` set and an error-level event saying the same."""
    error = {"code": code, "message": message, "param": param}
    failed = transition(connection, job_id, from_statuses, "failed", error=error, **values)
    if failed:
        add_event(connection, job_id, message, level="error")
    return failed

"""Rows of fine-tuning jobs. The jobs table is also the work queue: every change of status is one
conditional UPDATE, so two actors racing on a job can't both win; a claim locks the row it takes
(`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's transactions take turns)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, RowMapping, case, exists, func, insert, or_, select, update

from openft.store.paging import fetch_page
from openft.store.records import row_values
from openft.store.schema import jobs

_JSON_TEXT_COLUMNS = ("hyperparameters", "integrations", "error", "result_files")


@dataclass(frozen=True)
class JobRecord:
    id: str
    organization: str
    model: str
    training_file: str
    validation_file: str | None
    status: str
    created_at: int
    finished_at: int | None
    estimated_finish: int | None
    suffix: str | None
    seed: int
    method_type: str
    hyperparameters: dict[str, Any]
    metadata: dict[str, str] | None
    integrations: list[dict[str, Any]] | None
    error: dict[str, Any] | None
    fine_tuned_model: str | None
    result_files: list[str]
    trained_tokens: int | None
    control: str | None
    worker_id: str | None
    heartbeat_at: float | None
    attempts: int
    resume_from: str | None
    base_model: str | None = None  # the base model trained: `model`, unless it names a fine-tuned model
    start_from: str | None = None  # the fine-tuned model or checkpoint a continued job starts from
    base_parameters: int | None = None  # parameters of the base model (None: unknown): the memory it needs
    required_gpus: int = 0  # GPUs the worker training it must have (0: any device)

    @property
    def base(self) -> str:
        return self.base_model or self.model

    @classmethod
    def from_row(cls, row: RowMapping) -> JobRecord:
        return cls(**row_values(cls, row, json_columns=_JSON_TEXT_COLUMNS))


def _encode(values: dict[str, Any]) -> dict[str, Any]:
    return {
        name: json.dumps(value) if name in _JSON_TEXT_COLUMNS and value is not None else value
        for name, value in values.items()
    }


def insert_job(connection: Connection, record: JobRecord) -> None:
    connection.execute(insert(jobs).values(**_encode(asdict(record))))


def get_job(connection: Connection, job_id: str, organization: str | None = None) -> JobRecord | None:
    """`organization=None` is for workers, which act for every organization."""
    query = select(jobs).where(jobs.c.id == job_id)
    if organization is not None:
        query = query.where(jobs.c.organization == organization)
    row = connection.execute(query).mappings().first()
    return JobRecord.from_row(row) if row else None


def list_jobs(
    connection: Connection,
    organization: str,
    *,
    after: str | None,
    limit: int,
    metadata: dict[str, str] | None,
    metadata_is_null: bool = False,
) -> tuple[list[JobRecord], bool]:
    conditions: list[Any] = [jobs.c.organization == organization]
    if metadata_is_null:
        conditions.append(jobs.c.metadata.is_(None))
    for key, value in (metadata or {}).items():
        conditions.append(_metadata_equals(connection, key, value))
    page = fetch_page(connection, jobs, conditions, after=after, limit=limit, order="desc")
    return [JobRecord.from_row(row) for row in page.rows], page.has_more


def _metadata_equals(connection: Connection, key: str, value: str) -> Any:
    """`metadata[key] == value` with the key bound as a value. SQLite's JSON paths can't quote
    every key (`"` ends one), so it looks the key up among the object's entries instead."""
    if connection.dialect.name == "sqlite":
        entries = func.json_each(jobs.c.metadata).table_valued("key", "value")
        return exists(select(1).select_from(entries).where(entries.c.key == key, entries.c.value == value))
    return jobs.c.metadata[key].as_string() == value


def update_job(
    connection: Connection,
    job_id: str,
    *,
    from_statuses: Iterable[str] | None = None,
    held_by: str | None = None,
    **values: Any,
) -> bool:
    """Applies `values` if the job is still in one of `from_statuses` (and, when given, still held
    by the worker `held_by`); returns whether it was."""
    query = update(jobs).where(jobs.c.id == job_id)
    if from_statuses is not None:
        query = query.where(jobs.c.status.in_(list(from_statuses)))
    if held_by is not None:
        query = query.where(jobs.c.worker_id == held_by)
    return connection.execute(query.values(**_encode(values))).rowcount == 1


def claim_job(
    connection: Connection,
    worker_id: str,
    status: str,
    heartbeat_at: float,
    *,
    max_parameters: int | None = None,
    gpus: int | None = None,
) -> JobRecord | None:
    """Takes an unclaimed job in `status` for `worker_id`, or None when there is none. Fair between
    organizations: the job of the organization with the fewest jobs being worked on goes first
    (running, or claimed from `status` and about to start), then that of the organization served
    least recently (its last training run's last heartbeat), then the oldest. So claims turn from
    one organization to the next, with one worker as with many, and one organization's 50 queued
    jobs don't push another's one to the back.

    Only jobs that fit the worker are taken: `max_parameters`, the largest base model it can train
    (a job whose base model's size is unknown fits any), and `gpus`, the GPUs it has (a job needs
    `required_gpus`); None: no bound.

    Of two workers racing for the same job, one gets it. On SQLite the transaction holds the write
    lock (BEGIN IMMEDIATE), so the choice and the UPDATE are one step. On PostgreSQL the choice
    locks the chosen row `FOR UPDATE SKIP LOCKED`: a concurrent claimer skips it and takes the next
    one instead of waiting, so claims don't queue behind each other. For that next one to be what a
    claim made just after would choose, each waiting job is ordered by its organization's held count
    plus its turn among that organization's waiting jobs (1 for the oldest): the oldest jobs of every
    organization come before any organization's second, as if each claim before it had counted. One
    claim alone chooses exactly as (held, served, oldest) says."""
    waiting, other, ranked = jobs.alias("waiting"), jobs.alias("other"), jobs.alias("ranked")
    held = (other.c.worker_id.is_not(None)) & other.c.status.in_(["running", status])
    per_organization = (
        select(
            other.c.organization,
            func.sum(case((held, 1), else_=0)).label("held"),
            func.max(case((other.c.attempts > 0, other.c.heartbeat_at), else_=None)).label("served_at"),
        )
        .group_by(other.c.organization)
        .subquery("per_organization")
    )
    conditions = [ranked.c.status == status, ranked.c.worker_id.is_(None)]
    if max_parameters is not None:
        conditions.append(or_(ranked.c.base_parameters.is_(None), ranked.c.base_parameters <= max_parameters))
    if gpus is not None:
        conditions.append(ranked.c.required_gpus <= gpus)
    turns = (
        select(
            ranked.c.id,
            func.row_number().over(partition_by=ranked.c.organization, order_by=ranked.c.seq).label("turn"),
        )
        .where(*conditions)
        .subquery("turns")
    )
    candidate = (
        select(waiting.c.id)
        .select_from(
            waiting.join(turns, turns.c.id == waiting.c.id).join(
                per_organization, per_organization.c.organization == waiting.c.organization
            )
        )
        # the row itself may have been claimed since the snapshot `turns` was computed from
        .where(waiting.c.status == status, waiting.c.worker_id.is_(None))
        .order_by(
            per_organization.c.held + turns.c.turn,
            func.coalesce(per_organization.c.served_at, 0),
            waiting.c.seq,
        )
        .limit(1)
    )
    if connection.dialect.name == "postgresql":
        candidate = candidate.with_for_update(skip_locked=True, of=waiting)
    claimed = connection.execute(
        update(jobs)
        .where(jobs.c.id == candidate.scalar_subquery(), jobs.c.status == status, jobs.c.worker_id.is_(None))
        .values(worker_id=worker_id, heartbeat_at=heartbeat_at)
        .returning(jobs.c.id)
    ).scalar()
    return get_job(connection, claimed) if claimed else None


def stale_jobs(connection: Connection, heartbeat_before: float, asking_worker: str) -> list[JobRecord]:
    """Jobs held by a worker that has stopped beating, other than `asking_worker`: a worker that
    asks is alive, and a late beat of its own (a busy machine, a wait for SQLite's write lock) must
    not make it requeue a job it is still training."""
    rows = connection.execute(
        select(jobs).where(
            jobs.c.worker_id.is_not(None),
            jobs.c.worker_id != asking_worker,
            or_(jobs.c.heartbeat_at.is_(None), jobs.c.heartbeat_at < heartbeat_before),
        )
    ).mappings()
    return [JobRecord.from_row(row) for row in rows]


def beat(connection: Connection, worker_id: str, heartbeat_at: float) -> None:
    """Proves that `worker_id` is alive for every job it holds."""
    connection.execute(update(jobs).where(jobs.c.worker_id == worker_id).values(heartbeat_at=heartbeat_at))


def finished_jobs_with_resume_state(connection: Connection) -> list[JobRecord]:
    query = select(jobs).where(jobs.c.status.in_(["succeeded", "failed", "cancelled"]), jobs.c.resume_from.is_not(None))
    return [JobRecord.from_row(row) for row in connection.execute(query).mappings()]


def created_since(connection: Connection, organization: str, since: int) -> list[int]:
    """Creation times of the organization's jobs created at or after `since`, oldest first."""
    query = (
        select(jobs.c.created_at)
        .where(jobs.c.organization == organization, jobs.c.created_at >= since)
        .order_by(jobs.c.created_at)
    )
    return list(connection.execute(query).scalars())


def count_active(connection: Connection, organization: str) -> int:
    query = select(func.count()).where(
        jobs.c.organization == organization, jobs.c.status.in_(["validating_files", "queued", "running"])
    )
    return int(connection.execute(query).scalar_one())

"""Rows the store tests make: jobs queued as the API would, claims as a worker makes them."""

from __future__ import annotations

import time
from typing import Any

from openft import ids
from openft.store import Database
from openft.store import jobs as job_rows
from openft.store.jobs import JobRecord


def job_record(organization: str, status: str = "queued", **values: Any) -> JobRecord:
    fields: dict[str, Any] = {
        "id": ids.new_id("ftjob-"), "organization": organization, "model": "tiny", "training_file": "file-x",
        "validation_file": None, "status": status, "created_at": ids.now(), "finished_at": None,
        "estimated_finish": None, "suffix": None, "seed": 1, "method_type": "supervised", "hyperparameters": {},
        "metadata": None, "integrations": None, "error": None, "fine_tuned_model": None, "result_files": [],
        "trained_tokens": None, "control": None, "worker_id": None, "heartbeat_at": None, "attempts": 0,
        "resume_from": None,
    }  # fmt: skip
    return JobRecord(**{**fields, **values})


def queue(database: Database, organization: str, count: int = 1, status: str = "queued", **values: Any) -> list[str]:
    created = []
    with database.transaction() as connection:
        for _ in range(count):
            record = job_record(organization, status, **values)
            job_rows.insert_job(connection, record)
            created.append(record.id)
    return created


def claim(database: Database, worker: str = "worker-1", status: str = "queued", **bounds: Any) -> JobRecord | None:
    with database.transaction() as connection:
        return job_rows.claim_job(connection, worker, status, time.time(), **bounds)

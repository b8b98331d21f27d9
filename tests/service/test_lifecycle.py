"""The job state machine: every from→to pair of the table on a real SQLite file, the pairs it
doesn't have, and an actor that expects a status the job has left (the validator that used to
un-pause a job paused while it validated)."""

from __future__ import annotations

from pathlib import Path

import pytest

from openft import ids
from openft.service.lifecycle import TERMINAL, TRANSITIONS, transition
from openft.store import Database
from openft.store import events as event_rows
from openft.store import jobs as job_rows
from openft.store.jobs import JobRecord

STATUSES = sorted({*TRANSITIONS, *TERMINAL})
PAIRS = [(before, after) for before, afters in sorted(TRANSITIONS.items()) for after in sorted(afters)]


@pytest.fixture
def database(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'openft.db'}")
    database.migrate()
    return database


def a_job(database: Database, status: str) -> str:
    record = JobRecord(
        id=ids.new_id("ftjob-"), organization="org", model="tiny", training_file="file-x", validation_file=None,
        status=status, created_at=ids.now(), finished_at=None, estimated_finish=None, suffix=None, seed=1,
        method_type="supervised", hyperparameters={}, metadata=None, integrations=None, error=None,
        fine_tuned_model=None, result_files=[], trained_tokens=None, control=None, worker_id=None,
        heartbeat_at=None, attempts=0, resume_from=None,
    )  # fmt: skip
    with database.transaction() as connection:
        job_rows.insert_job(connection, record)
    return record.id


def status_of(database: Database, job_id: str) -> str:
    with database.transaction() as connection:
        job = job_rows.get_job(connection, job_id)
    assert job is not None
    return job.status


@pytest.mark.parametrize(("before", "after"), PAIRS, ids=[f"{b}->{a}" for b, a in PAIRS])
def test_each_transition_of_the_table(database: Database, before: str, after: str) -> None:
    job_id = a_job(database, before)
    with database.transaction() as connection:
        assert transition(connection, job_id, [before], after)
    assert status_of(database, job_id) == after
    with database.transaction() as connection:
        job = job_rows.get_job(connection, job_id)
    assert job is not None and (job.finished_at is not None) == (after in TERMINAL)


@pytest.mark.parametrize("before", STATUSES)
def test_pairs_outside_the_table_are_refused(database: Database, before: str) -> None:
    job_id = a_job(database, before)
    for after in STATUSES:
        if after not in TRANSITIONS.get(before, ()):
            with database.transaction() as connection, pytest.raises(ValueError, match="no transition"):
                transition(connection, job_id, [before], after)
    assert status_of(database, job_id) == before


def test_a_job_paused_while_it_validated_stays_paused(database: Database) -> None:
    job_id = a_job(database, "validating_files")
    with database.transaction() as connection:
        assert transition(connection, job_id, ["validating_files", "queued"], "paused")
    with database.transaction() as connection:  # the validator finishes afterwards
        assert not transition(connection, job_id, ["validating_files"], "queued")
        assert event_rows.list_events(connection, job_id, after=None, limit=10)[0] == []
    assert status_of(database, job_id) == "paused"
    with database.transaction() as connection:  # resuming an unvalidated job validates it again
        assert transition(connection, job_id, ["paused"], "validating_files")
    assert status_of(database, job_id) == "validating_files"

"""The job queue is fair between organizations (`openft.store.jobs.claim_job`), on SQLite and on
PostgreSQL: the organization with the fewest jobs being worked on goes first, then the one served
least recently, then the oldest job, so one organization's 50 queued jobs don't push another's one
to the back."""

from __future__ import annotations

from openft.store import Database
from openft.store import jobs as job_rows
from openft.store.jobs import JobRecord
from tests.store.support import claim, queue


def start(database: Database, job: JobRecord) -> None:
    """What a worker does with a claimed queued job: it runs, still held."""
    with database.transaction() as connection:
        assert job_rows.update_job(connection, job.id, from_statuses=["queued"], status="running")


def test_one_organizations_50_jobs_dont_push_anothers_one_to_the_back(database: Database) -> None:
    crowd = queue(database, "org-a", 50)
    lone = queue(database, "org-b")[0]
    first, second = claim(database, "worker-1"), claim(database, "worker-2")
    assert first is not None and second is not None
    assert first.id == crowd[0]  # both have nothing running: the oldest goes first
    assert second.id == lone  # org-a now has one job being worked on, org-b none


def test_claims_turn_between_organizations_and_a_running_job_counts(database: Database) -> None:
    a_jobs = queue(database, "org-a", 3)
    b_jobs = queue(database, "org-b", 3)
    order = []
    for number in range(6):
        job = claim(database, f"worker-{number}")
        assert job is not None and job.worker_id == f"worker-{number}"
        start(database, job)
        order.append(job.id)
    assert order == [a_jobs[0], b_jobs[0], a_jobs[1], b_jobs[1], a_jobs[2], b_jobs[2]]
    assert claim(database) is None  # everything is held: nothing is claimed twice


def test_the_organization_with_fewer_running_goes_first_even_if_newer(database: Database) -> None:
    running = queue(database, "org-a")
    older = queue(database, "org-a")[0]
    newer = queue(database, "org-b")[0]
    job = claim(database)
    assert job is not None and job.id == running[0]
    start(database, job)
    second = claim(database)
    assert second is not None and second.id == newer and older != newer
    third = claim(database)
    assert third is not None and third.id == older


def test_only_jobs_in_the_claimed_status_are_taken(database: Database) -> None:
    validating = queue(database, "org-a", status="validating_files")[0]
    queued = queue(database, "org-b")[0]
    paused = queue(database, "org-c", status="paused")[0]
    taken = claim(database, status="validating_files")
    assert taken is not None and taken.id == validating
    taken = claim(database, status="queued")
    assert taken is not None and taken.id == queued
    assert claim(database, status="queued") is None and claim(database, status="validating_files") is None
    with database.transaction() as connection:
        held = job_rows.get_job(connection, paused)
    assert held is not None and held.worker_id is None


def test_one_worker_serves_organizations_in_turn(database: Database) -> None:
    """With one worker nothing is held at the next claim: the organization served least recently
    goes first."""
    a_jobs = queue(database, "org-a", 3)
    b_jobs = queue(database, "org-b", 2)
    order = []
    for beat in range(1, 6):
        job = claim(database)
        assert job is not None
        with database.transaction() as connection:  # it runs (one attempt, its heartbeats) and ends
            job_rows.update_job(connection, job.id, status="succeeded", attempts=1, heartbeat_at=float(beat))
            job_rows.update_job(connection, job.id, worker_id=None)
        order.append(job.id)
    assert order == [a_jobs[0], b_jobs[0], a_jobs[1], b_jobs[1], a_jobs[2]]

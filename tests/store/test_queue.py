"""The jobs table as a work queue, on SQLite and PostgreSQL: with many workers claiming at once each
job is claimed exactly once; on PostgreSQL a claim skips rows another claim has locked instead of
waiting for it; a worker claims only jobs that fit what it can run; a worker finds the jobs of
workers that went silent, never its own."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from openft.store import Database
from openft.store import jobs as job_rows
from tests.store.support import claim, queue

CLAIMERS = 8
JOBS_PER_ORGANIZATION = 30
ORGANIZATIONS = 4


def test_concurrent_claimers_take_each_job_exactly_once(database: Database) -> None:
    queued = set()
    for number in range(ORGANIZATIONS):
        queued.update(queue(database, f"org-{number}", JOBS_PER_ORGANIZATION))
    claims: list[tuple[str, str]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(CLAIMERS)

    def claimer(worker: str) -> None:
        try:
            start.wait()
            while (job := claim(database, worker)) is not None:
                claims.append((worker, job.id))
        except BaseException as error:  # reported below: a thread's exception would be lost
            errors.append(error)

    threads = [threading.Thread(target=claimer, args=(f"worker-{n}",)) for n in range(CLAIMERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    claimed = Counter(job_id for _, job_id in claims)
    assert set(claimed) == queued and set(claimed.values()) == {1}  # every job, none twice
    with database.transaction() as connection:
        for worker, job_id in claims:
            job = job_rows.get_job(connection, job_id)
            assert job is not None and job.worker_id == worker  # the row says who won it


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite's claims take turns on its write lock
def test_a_claim_skips_a_row_another_claim_has_locked(database: Database) -> None:
    first_job, second_job = queue(database, "org-a"), queue(database, "org-b")
    taken: list[object] = []
    with database.engine.connect() as holder:
        holding = holder.begin()
        held = job_rows.claim_job(holder, "worker-slow", "queued", time.time())  # locked, not committed
        assert held is not None and [held.id] == first_job
        other = threading.Thread(target=lambda: taken.append(claim(database, "worker-fast")))
        other.start()  # on a connection of its own: it must not wait for the first claim's lock
        other.join(timeout=10)
        waited = other.is_alive()
        holding.rollback()  # the slow claimer gives up: its job is claimable again
        other.join()
    assert not waited, "the second claim waited for the row the first one had locked"
    assert [job.id for job in taken if job is not None] == second_job  # type: ignore[attr-defined]
    again = claim(database, "worker-next")
    assert again is not None and [again.id] == first_job


def test_a_worker_claims_only_jobs_that_fit_it(database: Database) -> None:
    big = queue(database, "org-a", base_parameters=7_000_000_000)[0]
    gpu = queue(database, "org-b", base_parameters=1_000_000, required_gpus=1)[0]
    unknown = queue(database, "org-c", base_parameters=None)[0]
    small = queue(database, "org-d", base_parameters=1_000_000)[0]
    cpu_worker = {"max_parameters": 1_000_000_000, "gpus": 0}
    taken = [claim(database, "cpu-1", **cpu_worker), claim(database, "cpu-2", **cpu_worker)]
    assert {job.id for job in taken if job} == {unknown, small}  # its size unknown: any worker may try
    assert claim(database, "cpu-3", **cpu_worker) is None  # the 7B and the GPU job wait
    gpu_worker = {"max_parameters": 10_000_000_000, "gpus": 1}
    taken = [claim(database, "gpu-1", **gpu_worker), claim(database, "gpu-2", **gpu_worker)]
    assert {job.id for job in taken if job} == {big, gpu}


def test_validation_claims_ignore_capabilities(database: Database) -> None:
    validating = queue(database, "org-a", status="validating_files", base_parameters=10**12, required_gpus=8)[0]
    job = claim(database, "cpu-1", status="validating_files")  # the worker asks without bounds
    assert job is not None and job.id == validating


def test_a_worker_finds_the_silent_jobs_of_others_but_never_its_own(database: Database) -> None:
    queue(database, "org-a", 4)
    mine, theirs, fresh = (claim(database, worker) for worker in ("worker-1", "worker-2", "worker-3"))
    # The fourth stays queued, held by no one: not stale.
    with database.transaction() as connection:
        # worker-1 and worker-2 beat last a minute ago; worker-3 just now.
        job_rows.beat(connection, "worker-1", time.time() - 60)
        job_rows.beat(connection, "worker-2", time.time() - 60)
        stale = job_rows.stale_jobs(connection, time.time() - 30, "worker-1")
    assert mine and theirs and fresh
    assert [job.id for job in stale] == [theirs.id]

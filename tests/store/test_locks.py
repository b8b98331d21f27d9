"""Read-then-write checks that a conditional UPDATE can't express (quotas counted before the insert
they guard) hold on both backends: SQLite's transactions take turns on its write lock, PostgreSQL's
that share a key take turns on an advisory lock (openft/store/locks.py); other keys don't wait."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select

from openft.config import Settings
from openft.errors import RateLimited
from openft.service.quotas import Quotas
from openft.store import Database, locks
from openft.store import jobs as job_rows
from openft.store.schema import jobs
from tests.store.support import job_record

CREATORS = 6


def run_together(count: int, target: object) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run() -> None:
        try:
            start.wait()
            target()  # type: ignore[operator]
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


def test_concurrent_job_creations_cannot_all_slip_under_the_active_job_limit(database: Database) -> None:
    quotas = Quotas(Settings(max_active_jobs=2, jobs_per_hour=1000))

    def create() -> None:
        with database.transaction() as connection:
            quotas.check_new_job(connection, "org-a")
            time.sleep(0.2)  # a slow request: the others arrive while it counts
            job_rows.insert_job(connection, job_record("org-a", status="validating_files"))

    errors = run_together(CREATORS, create)
    assert len(errors) == CREATORS - 2 and all(isinstance(error, RateLimited) for error in errors), errors
    with database.transaction() as connection:
        assert connection.execute(select(func.count()).select_from(jobs)).scalar_one() == 2


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite's writers take turns whatever the key
def test_other_keys_do_not_wait(database: Database) -> None:
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with database.transaction() as connection:
            locks.serialize(connection, "quotas:org-a")
            held.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(30)
        started = time.monotonic()
        with database.transaction() as connection:
            locks.serialize(connection, "quotas:org-b")
        assert time.monotonic() - started < 5
    finally:
        release.set()
        thread.join()

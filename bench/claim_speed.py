"""Claim throughput and fairness of the job queue: M worker processes compete for J queued jobs on
PostgreSQL and on SQLite.

    .venv/bin/python bench/claim_speed.py [--workers 4] [--jobs 400] [--organizations 8]
        [--backends sqlite,postgresql] [--work-ms 0] [--finished 0] [--postgres-url URL]

For each backend it makes a fresh database (a SQLite file in a temporary directory; a PostgreSQL
database `openft_bench_<random>` on the server of --postgres-url, default $OPENFT_TEST_POSTGRES_URL
or postgres@127.0.0.1:5432, dropped at the end), migrates it, and inserts J queued jobs through the
store layer, spread round-robin over the organizations (after --finished jobs that already
succeeded, for the claim's cost on a table with a history: the fair order reads every job of
every organization). Then M processes (spawned, each with its own
engine, as workers have) start together and loop as a worker's training loop does, without the
training: claim a job (`openft.store.jobs.claim_job`, the worker's claim), mark it running, sleep
--work-ms, mark it succeeded and release it; until a claim finds nothing.

It checks, and exits 1 unless, every job was claimed exactly once (by the claims the workers
report, and by the rows: every job succeeded, released, one attempt), and prints per backend:
claims per second (J over the time from the start to the last claim), the claim's latency (p50,
p99), each worker's claim count against its fair share J/M (a worker with no claim is starved),
and the organizations' spread: over the claim sequence in the order the claims were made, the
largest difference between the organization served most and the one served least so far, while
each still had jobs queued (with equal queues and fair turns it stays within about M).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from openft import ids  # noqa: E402
from openft.store import Database  # noqa: E402
from openft.store import jobs as job_rows  # noqa: E402
from openft.store.jobs import JobRecord  # noqa: E402

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def job(organization: str, status: str = "queued") -> JobRecord:
    finished = status == "succeeded"
    return JobRecord(
        id=ids.new_id("ftjob-"), organization=organization, model="tiny", training_file="file-x",
        validation_file=None, status=status, created_at=ids.now(), finished_at=ids.now() if finished else None,
        estimated_finish=None, suffix=None, seed=1, method_type="supervised", hyperparameters={}, metadata=None,
        integrations=None, error=None, fine_tuned_model=None, result_files=[], trained_tokens=None, control=None,
        worker_id=None, heartbeat_at=time.time() - 3600 if finished else None, attempts=int(finished),
        resume_from=None, base_parameters=135_000_000,
    )  # fmt: skip


def worker_main(url: str, worker_id: str, work_s: float, start: Any, results: Any) -> None:
    database = Database(url)
    claims: list[tuple[str, str, float, float]] = []  # job id, organization, claimed at, latency
    start.wait()
    while True:
        began = time.perf_counter()
        with database.transaction() as connection:
            claimed = job_rows.claim_job(connection, worker_id, "queued", time.time())
            decided = time.perf_counter()  # before the commit: on SQLite still under its write lock
        if claimed is None:
            break
        claims.append((claimed.id, claimed.organization, decided, time.perf_counter() - began))
        with database.transaction() as connection:
            job_rows.update_job(connection, claimed.id, from_statuses=["queued"], held_by=worker_id,
                                status="running", attempts=claimed.attempts + 1)  # fmt: skip
        if work_s:
            time.sleep(work_s)
        with database.transaction() as connection:
            job_rows.update_job(connection, claimed.id, from_statuses=["running"], held_by=worker_id,
                                status="succeeded", worker_id=None, heartbeat_at=time.time())  # fmt: skip
    database.dispose()
    results.put((worker_id, claims))


def run(backend: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    database = Database(url)
    database.migrate()
    organizations = [f"org-{n}" for n in range(args.organizations)]
    history = [job(organizations[n % len(organizations)], "succeeded") for n in range(args.finished)]
    queued = [job(organizations[n % len(organizations)]) for n in range(args.jobs)]
    with database.transaction() as connection:
        for record in history + queued:
            job_rows.insert_job(connection, record)
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(args.workers + 1), context.Queue()
    workers = [f"worker-{n}" for n in range(args.workers)]
    processes = [
        context.Process(target=worker_main, args=(url, worker, args.work_ms / 1000, start, results))
        for worker in workers
    ]
    for process in processes:
        process.start()
    start.wait()  # every worker has imported and connected: the clock starts now
    began = time.perf_counter()
    reports = dict(results.get(timeout=600) for _ in processes)
    for process in processes:
        process.join()
    claims = sorted((claim for report in reports.values() for claim in report), key=lambda claim: claim[2])
    elapsed = claims[-1][2] - began if claims else 0.0

    problems = []
    claimed = Counter(claim[0] for claim in claims)
    twice = [job_id for job_id, count in claimed.items() if count > 1]
    missed = {record.id for record in queued} - set(claimed)
    if twice:
        problems.append(f"{len(twice)} jobs claimed more than once")
    if missed:
        problems.append(f"{len(missed)} jobs never claimed")
    with database.transaction() as connection:
        for record in queued:
            row = job_rows.get_job(connection, record.id)
            if row is None or row.status != "succeeded" or row.worker_id is not None or row.attempts != 1:
                problems.append(f"{record.id} ended {row and (row.status, row.worker_id, row.attempts)}")
                break
    database.dispose()

    remaining = Counter(record.organization for record in queued)
    served: Counter[str] = Counter({organization: 0 for organization in organizations})
    spread = 0
    for _, organization, _, _ in claims:
        served[organization] += 1
        remaining[organization] -= 1
        if all(remaining[o] > 0 for o in organizations):  # while every organization still has jobs queued
            spread = max(spread, max(served.values()) - min(served.values()))
    latencies = sorted(claim[3] for claim in claims)
    per_worker = {worker: len(reports[worker]) for worker in workers}
    return {
        "backend": backend,
        "claims_per_s": len(claims) / elapsed if elapsed else 0.0,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else 0.0,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000 if latencies else 0.0,
        "per_worker": per_worker,
        "starved": [worker for worker, count in per_worker.items() if count == 0],
        "spread": spread,
        "problems": problems,
    }


def postgres_database(admin_url: str) -> tuple[str, Any]:
    import psycopg

    conninfo = "postgresql://" + admin_url.split("://", 1)[1]
    name = f"openft_bench_{secrets.token_hex(4)}"
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return admin_url.rpartition("/")[0] + "/" + name, drop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4, help="worker processes (M)")
    parser.add_argument("--jobs", type=int, default=400, help="queued jobs (J)")
    parser.add_argument("--organizations", type=int, default=8, help="organizations the jobs belong to")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--work-ms", type=float, default=0.0, help="time a worker holds each job (training)")
    parser.add_argument("--finished", type=int, default=0, help="succeeded jobs already in the table")
    parser.add_argument("--postgres-url", default=os.environ.get("OPENFT_TEST_POSTGRES_URL") or DEFAULT_POSTGRES)
    args = parser.parse_args()

    rows = []
    for backend in args.backends.split(","):
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as directory:
                rows.append(run(backend, f"sqlite:///{Path(directory) / 'openft.db'}", args))
        elif backend == "postgresql":
            url, drop = postgres_database(args.postgres_url)
            try:
                rows.append(run(backend, url, args))
            finally:
                drop()
        else:
            parser.error(f"unknown backend {backend!r}")

    fair = args.jobs / args.workers
    print(
        f"{args.workers} workers, {args.jobs} jobs of {args.organizations} organizations, "
        f"{args.work_ms:g} ms of work per job, {args.finished} finished jobs in the table; {os.cpu_count()} CPUs"
    )
    per_worker = f"claims per worker (fair {fair:g})"
    print(f"{'backend':<11} {'claims/s':>9} {'p50 ms':>7} {'p99 ms':>7}  {per_worker:<34} "
          f"{'min/fair':>8} {'starved':>7} {'org spread':>10}  exactly once")  # fmt: skip
    failed = False
    for row in rows:
        counts = list(row["per_worker"].values())
        once = "yes" if not row["problems"] else "NO: " + "; ".join(row["problems"])
        failed |= bool(row["problems"])
        print(
            f"{row['backend']:<11} {row['claims_per_s']:>9.1f} {row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f}  "
            f"{' '.join(str(count) for count in counts):<34} {min(counts) / fair:>8.2f} "
            f"{len(row['starved']):>7} {row['spread']:>10}  {once}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

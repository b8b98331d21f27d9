"""Several workers on one database: each job is claimed and trained exactly once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, TRAINING_ENV, chat_examples, start_server, wait_for_job, wait_until


def test_two_workers_share_the_queue(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    server = start_server(tmp_path_factory.mktemp("two-workers"), OPENFT_BASE_MODELS=f"tiny={tiny_dir}", **TRAINING_ENV)
    worker_log = server.data_dir / "worker.log"
    with worker_log.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "openft", "worker"],
            cwd=REPO_ROOT,
            env=server.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "openft worker" in worker_log.read_text(), timeout=60, what="the standalone worker")
        client = server.client()
        file_id = client.files.create(file=("t.jsonl", chat_examples(10)), purpose="fine-tune").id
        jobs = [
            client.fine_tuning.jobs.create(model="tiny", training_file=file_id, hyperparameters={"n_epochs": 1})
            for _ in range(4)
        ]
        for job in jobs:
            assert wait_for_job(client, job.id, ("succeeded", "failed")).status == "succeeded"
        logs = {"embedded": server.log(), "standalone": worker_log.read_text()}
        for job in jobs:
            events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
            assert [e.message for e in events].count("Fine-tuning job started") == 1
            assert sum(text.count(f"training {job.id} in process") for text in logs.values()) == 1
        assert all("training ftjob-" in text for text in logs.values()), "both workers should have trained"
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        server.stop()

"""A crash never loses a job: a server killed mid-training leaves a job that the next server's
worker notices, queues again and trains to the end."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TRAINING_ENV, chat_examples, start_server, wait_for_job, wait_until

RECOVERY_ENV = {**TRAINING_ENV, "OPENFT_WORKER_TIMEOUT_SECONDS": "3"}


def test_a_killed_server_loses_nothing(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    data_dir = tmp_path_factory.mktemp("recovery")
    first = start_server(data_dir, OPENFT_BASE_MODELS=f"tiny={tiny_dir}", **RECOVERY_ENV)
    client = first.client()
    file_id = client.files.create(file=("t.jsonl", chat_examples(10)), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model="tiny", training_file=file_id, hyperparameters={"n_epochs": 8})
    wait_until(
        lambda: any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job.id, limit=5).data),
        timeout=120,
        what="training to start",
    )
    first.process.kill()  # no chance to clean up
    first.process.wait()

    second = start_server(data_dir, OPENFT_BASE_MODELS=f"tiny={tiny_dir}", **RECOVERY_ENV)
    try:
        client = second.client()
        assert client.files.retrieve(file_id).id == file_id
        finished = wait_for_job(client, job.id, ("succeeded", "failed", "cancelled"), timeout=240)
        assert finished.status == "succeeded", finished.error
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=10_000).data]
        assert "The job's worker stopped answering; the job is queued again" in messages
        assert messages.count("Fine-tuning job started") == 2
        assert messages.count(f"Created fine-tuning job: {job.id}") == 1
    finally:
        second.stop()

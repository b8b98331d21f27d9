"""A crash never loses a job: a server killed mid-training leaves a job that the next server's
worker notices, queues again and trains to the end, continuing from the last saved step."""

from __future__ import annotations

import base64
import os
import signal
from pathlib import Path

import openai
import pytest

from tests.conftest import TRAINING_ENV, chat_examples, spawned_children, start_server, wait_for_job, wait_until

# A resume state after every step, so that the kill always finds one to continue from.
RECOVERY_ENV = {**TRAINING_ENV, "OPENFT_WORKER_TIMEOUT_SECONDS": "3", "OPENFT_RESUME_SAVE_SECONDS": "0.001"}


def wait_for_steps(client: openai.OpenAI, job_id: str, steps: int) -> None:
    wait_until(
        lambda: sum(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job_id, limit=50).data) >= steps,
        timeout=120,
        what=f"{steps} steps of training",
    )


def test_a_killed_server_loses_nothing(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    data_dir = tmp_path_factory.mktemp("recovery")
    first = start_server(data_dir, OPENFT_BASE_MODELS=f"tiny={tiny_dir}", **RECOVERY_ENV)
    client = first.client()
    file_id = client.files.create(file=("t.jsonl", chat_examples(10)), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model="tiny", training_file=file_id, hyperparameters={"n_epochs": 8})
    wait_for_steps(client, job.id, 3)
    first.process.kill()  # no chance to clean up
    first.process.wait()

    second = start_server(data_dir, OPENFT_BASE_MODELS=f"tiny={tiny_dir}", **RECOVERY_ENV)
    try:
        client = second.client()
        assert client.files.retrieve(file_id).id == file_id
        finished = wait_for_job(client, job.id, ("succeeded", "failed", "cancelled"), timeout=240)
        assert finished.status == "succeeded", finished.error
        events = client.fine_tuning.jobs.list_events(job.id, limit=10_000).data
        messages = [e.message for e in events]
        assert "The job's worker stopped answering; the job is queued again" in messages
        assert messages.count("Fine-tuning job started") == 2
        assert messages.count(f"Created fine-tuning job: {job.id}") == 1
        # It went on from a saved step, not from the start ...
        continued = [m for m in messages if m.startswith("Training continues from step ")]
        assert len(continued) == 1
        resumed_at, total = (int(n) for n in continued[0].removeprefix("Training continues from step ").split("/"))
        assert 2 <= resumed_at < total
        # ... and every step's metrics appear once, in the events and in the result file.
        steps = sorted(e.data["step"] for e in events if e.type == "metrics")
        assert steps == list(range(1, total + 1))
        result = base64.b64decode(client.files.content(finished.result_files[0]).content).decode().splitlines()
        assert [int(line.split(",")[0]) for line in result[1:]] == list(range(1, total + 1))
        checkpoint_steps = sorted(c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data)
        assert len(checkpoint_steps) == len(set(checkpoint_steps)) == 3
        created = [m for m in messages if m.startswith("Checkpoint created at step ")]
        assert len(created) == len(set(created))
    finally:
        second.stop()


def test_a_killed_training_process_is_run_again_from_its_saved_step(
    tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    live = start_server(tmp_path_factory.mktemp("killed-run"), OPENFT_BASE_MODELS=f"tiny={tiny_dir}", **RECOVERY_ENV)
    try:
        client = live.client()
        file_id = client.files.create(file=("t.jsonl", chat_examples(10)), purpose="fine-tune").id
        job = client.fine_tuning.jobs.create(model="tiny", training_file=file_id, hyperparameters={"n_epochs": 8})
        wait_for_steps(client, job.id, 3)
        (pid,) = spawned_children(live.process.pid)
        os.kill(pid, signal.SIGKILL)  # as the out-of-memory killer would

        finished = wait_for_job(client, job.id, ("succeeded", "failed", "cancelled"), timeout=240)
        assert finished.status == "succeeded", finished.error
        events = client.fine_tuning.jobs.list_events(job.id, limit=10_000).data
        messages = [e.message for e in events]
        assert (
            "The training process exited with code -9 without a result. The job is queued again and continues "
            "from its last saved step" in messages
        )
        assert sum(m.startswith("Training continues from step ") for m in messages) == 1
        steps = sorted(e.data["step"] for e in events if e.type == "metrics")
        assert steps == list(range(1, steps[-1] + 1))
    finally:
        live.stop()

"""Beyond one machine: an API server and two workers, each with its own data directory, sharing
nothing but PostgreSQL and an S3-compatible object store (SeaweedFS). The seed workflow runs
through them (upload, train, chat with the result, served by the API server from the store), and a
worker lost mid-job (killed with its training process, as a machine going down) leaves the job to
the other worker, which continues it from its saved step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TRAINING_ENV, chat_examples, start_server, wait_for_job, wait_until


def start_worker(data_dir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    data_dir.mkdir(parents=True, exist_ok=True)
    log = (data_dir / "worker.log").open("wb")
    # A session of its own: killing its process group takes the training process down with it.
    return subprocess.Popen(
        [sys.executable, "-m", "openft", "worker"],
        env={**env, "OPENFT_DATA_DIR": str(data_dir)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def metrics_steps(client: Any, job_id: str) -> list[int]:
    return [e.data["step"] for e in client.fine_tuning.jobs.list_events(job_id, limit=1000).data if e.type == "metrics"]


def test_two_workers_share_only_postgres_and_object_storage(
    tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory, postgres: Any, seaweedfs: Any
) -> None:
    root = tmp_path_factory.mktemp("scale-out")
    shared = {
        "OPENFT_DATABASE_URL": postgres.new_schema(),
        **seaweedfs.env("scale-out"),
        "OPENFT_BASE_MODELS": f"tiny={tiny_dir}",
        "OPENFT_MAX_SEQ_LEN": "64",
        **TRAINING_ENV,
        "OPENFT_WORKER_TIMEOUT_SECONDS": "3",
        "OPENFT_RESUME_SAVE_SECONDS": "0.001",  # a saved state after every step
    }
    api = start_server(root / "api", OPENFT_EMBEDDED_WORKER="false", **shared)
    env = {**api.env, **shared}
    first = start_worker(root / "worker-1", env)
    second: subprocess.Popen[bytes] | None = None
    try:
        client = api.client()
        file_id = client.files.create(file=("t.jsonl", chat_examples(10)), purpose="fine-tune").id
        job = client.fine_tuning.jobs.create(model="tiny", training_file=file_id, hyperparameters={"n_epochs": 8})
        wait_until(lambda: len(metrics_steps(client, job.id)) >= 3, timeout=180, what="3 steps on the first worker")

        second = start_worker(root / "worker-2", env)
        os.killpg(first.pid, signal.SIGKILL)  # the first machine is gone, training process and all
        first.wait()

        finished = wait_for_job(client, job.id, ("succeeded", "failed", "cancelled"), timeout=240)
        assert finished.status == "succeeded", finished.error
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1000).data]
        assert "The job's worker stopped answering; the job is queued again" in messages
        continued = [m for m in messages if m.startswith("Training continues from step ")]
        assert len(continued) == 1 and not continued[0].startswith("Training continues from step 0/")
        steps = sorted(metrics_steps(client, job.id))
        assert steps == list(range(1, steps[-1] + 1))  # every step once

        # Any API server serves the new model: its adapter comes from the object store.
        assert finished.fine_tuned_model is not None
        answer = client.chat.completions.create(
            model=finished.fine_tuned_model, messages=[{"role": "user", "content": "What is 2 plus 2?"}], max_tokens=8
        )
        assert answer.choices[0].message.content
        # The checkpoints went to the object store, not to a directory the API server could see.
        assert any(key.endswith("adapter_model.safetensors") for key in seaweedfs.keys("scale-out"))
        assert not list((root / "api").glob("blobs/jobs/*"))
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                os.killpg(worker.pid, signal.SIGINT)
                worker.wait(60)
        api.stop()

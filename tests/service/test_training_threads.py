"""OPENFT_TRAINING_THREADS reaches the training process: its run trains with that many torch threads."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import TRAINING_ENV, chat_examples, start_server, wait_for_job


def test_a_job_trains_with_the_configured_threads(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    threads = (os.cpu_count() or 1) + 1  # never torch's default (one per core)
    server = start_server(
        tmp_path_factory.mktemp("threads"),
        OPENFT_BASE_MODELS=f"tiny={tiny_dir}",
        OPENFT_MAX_SEQ_LEN="64",
        OPENFT_TRAINING_THREADS=str(threads),
        **TRAINING_ENV,
    )
    try:
        client = server.client()
        file_id = client.files.create(file=("t.jsonl", chat_examples(10)), purpose="fine-tune").id
        job = client.fine_tuning.jobs.create(model="tiny", training_file=file_id, hyperparameters={"n_epochs": 1})
        assert wait_for_job(client, job.id, ("succeeded", "failed"), timeout=240).status == "succeeded"

        used = re.findall(r"training \d+ examples for \d+ steps on cpu \(\w+, (\d+) threads\)", server.log())
        assert used == [str(threads)], server.log()[-3000:]
    finally:
        server.stop()

"""The worker's ready training process: a job after the first trains in a process that was made
ready (libraries imported, base model loaded) before the job was claimed, and a ready process
left waiting longer than the idle time exits, releasing its memory. The ready process warmed up
with torch's default threads; each job trains with OPENFT_TRAINING_THREADS."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import TRAINING_ENV, chat_examples, spawned_children, start_server, wait_for_job, wait_until

IDLE_SECONDS = 20
THREADS = (os.cpu_count() or 1) + 1  # never torch's default (one per core)


def test_jobs_train_in_a_ready_process_that_exits_when_idle(
    tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = start_server(
        tmp_path_factory.mktemp("warm"),
        OPENFT_BASE_MODELS=f"tiny={tiny_dir}",
        OPENFT_MAX_SEQ_LEN="64",
        OPENFT_WARM_TRAINER_IDLE_SECONDS=str(IDLE_SECONDS),
        OPENFT_TRAINING_THREADS=str(THREADS),
        **TRAINING_ENV,
    )
    try:
        client = server.client()
        jobs = []
        for offset in (0, 10):
            file_id = client.files.create(file=("t.jsonl", chat_examples(10, offset=offset)), purpose="fine-tune").id
            job = client.fine_tuning.jobs.create(model="tiny", training_file=file_id, hyperparameters={"n_epochs": 1})
            assert wait_for_job(client, job.id, ("succeeded", "failed"), timeout=240).status == "succeeded"
            jobs.append(job.id)

        handed = re.findall(r"training (ftjob-\w+) in the ready process", server.log())
        assert jobs[1] in handed, "the second job did not train in a ready process"
        used = re.findall(r"training \d+ examples for \d+ steps on cpu \(\w+, (\d+) threads\)", server.log())
        assert used == [str(THREADS)] * 2, server.log()[-3000:]
        # After the last job a process is made ready again for its model (the third); unused, it leaves.
        ready = wait_until(
            lambda: (pids := re.findall(r"training process (\d+) getting ready", server.log()))[2:] and pids[2],
            timeout=60,
            what="a process made ready after the last job",
        )
        assert int(ready) in spawned_children(server.process.pid)
        wait_until(
            lambda: int(ready) not in spawned_children(server.process.pid),
            timeout=IDLE_SECONDS + 30,
            what="the idle ready process to exit",
        )
    finally:
        server.stop()

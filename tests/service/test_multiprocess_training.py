"""A server whose worker gives each job two training processes (OPENFT_TRAINING_PROCESSES=2, DDP
over gloo): a job trains to success with every step's metrics event recorded once, and the second
rank exits with the run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import TRAINING_ENV, chat_examples, start_server, wait_for_job, wait_until

N_EXAMPLES, BATCH, EPOCHS = 10, 4, 2  # batches of 4, 4 and 2: each rank has examples in every step
STEPS = EPOCHS * 3


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_job_trains_in_two_processes(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    server = start_server(
        tmp_path_factory.mktemp("ddp"),
        OPENFT_BASE_MODELS=f"tiny={tiny_dir}",
        OPENFT_MAX_SEQ_LEN="64",
        OPENFT_TRAINING_PROCESSES="2",
        **TRAINING_ENV,
    )
    try:
        client = server.client()
        file_id = client.files.create(file=("t.jsonl", chat_examples(N_EXAMPLES)), purpose="fine-tune").id
        job = client.fine_tuning.jobs.create(
            model="tiny", training_file=file_id, hyperparameters={"n_epochs": EPOCHS, "batch_size": BATCH}
        )
        assert wait_for_job(client, job.id, ("succeeded", "failed"), timeout=240).status == "succeeded"

        events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
        steps = sorted(int(e.data["step"]) for e in events if e.type == "metrics")  # type: ignore[index]
        assert steps == list(range(1, STEPS + 1))  # each step once: only rank 0 records
        checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
        assert sorted(c.step_number for c in checkpoints) == [3, 6]

        launched = re.findall(r"training in 2 processes \(gloo\): ranks 1 to 1 are processes \[(\d+)\]", server.log())
        assert len(launched) == 1, server.log()[-3000:]
        peer = int(launched[0])
        wait_until(lambda: not running(peer), timeout=60, what="the second rank to exit")
    finally:
        server.stop()

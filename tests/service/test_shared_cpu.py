"""A server that trains and serves on one CPU (engine/cpu_share.py): a job trains on every core
while no chat completion is generated and on half of them while one is, and generation drops to
half the cores while the job trains; OPENFT_SERVING_THREADS fixes generation's threads."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TRAINING_ENV, LiveServer, chat_examples, start_server, wait_for_job, wait_until

CORES = os.cpu_count() or 1
QUESTION: Any = [{"role": "user", "content": "Tell a story."}]


def running(server: LiveServer) -> int:
    health = httpx.get(server.base_url.removesuffix("/v1") + "/health", timeout=10).json()
    return int(health.get("models", {}).get("tiny", {}).get("running", 0))


def train_job(server: LiveServer, offset: int) -> None:
    client = server.client()
    file_id = client.files.create(file=("t.jsonl", chat_examples(10, offset=offset)), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model="tiny", training_file=file_id, hyperparameters={"n_epochs": 1})
    done = wait_for_job(client, job.id, ("succeeded", "failed"), timeout=240)
    assert done.status == "succeeded", (done.error, server.log()[-3000:])


@pytest.mark.skipif(CORES < 2, reason="one core cannot be halved")
def test_training_and_generation_split_the_cores_while_both_are_busy(
    tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = start_server(
        tmp_path_factory.mktemp("shared-cpu"),
        OPENFT_BASE_MODELS=f"tiny={tiny_dir}",
        OPENFT_MAX_SEQ_LEN="64",
        OPENFT_CPU_SHARE_DIR=str(tmp_path_factory.mktemp("cpu-share")),  # this server's processes alone
        **TRAINING_ENV,
    )
    stop = threading.Event()
    errors: list[Exception] = []

    def generate() -> None:  # one long request after another, until told to stop
        client = server.client()
        try:
            while not stop.is_set():
                client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=2000)
        except Exception as error:  # for the test's thread to report
            errors.append(error)

    generating = threading.Thread(target=generate)
    try:
        train_job(server, 0)  # nothing generates yet
        generating.start()
        wait_until(lambda: running(server) > 0, timeout=60, what="a chat completion generating")
        train_job(server, 10)
        stop.set()
        generating.join(timeout=120)
        assert not errors and not generating.is_alive(), errors
        log = server.log()
        used = re.findall(r"training \d+ examples for \d+ steps on cpu \(\w+, (\d+) threads\)", log)
        assert used == [str(CORES), str(CORES // 2)], log[-3000:]
        assert f"generating on {CORES // 2} threads: training on this host is busy" in log, log[-3000:]
    finally:
        stop.set()
        server.stop()


def test_serving_threads_fix_generations_threads(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    threads = CORES + 1  # never the default
    server = start_server(
        tmp_path_factory.mktemp("serving-threads"),
        OPENFT_BASE_MODELS=f"tiny={tiny_dir}",
        OPENFT_SERVING_THREADS=str(threads),
        OPENFT_EMBEDDED_WORKER="false",
    )
    try:
        reply = server.client().chat.completions.create(model="tiny", messages=QUESTION, max_tokens=4)
        assert reply.choices[0].message.content is not None
        assert re.search(rf"loaded \S+ on cpu \(torch.float32, {threads} threads\)", server.log()), server.log()
    finally:
        server.stop()

"""Claim to first step: how long a queued job waits between a worker taking it and its first
training step, with a fresh training process per job (OPENFT_WARM_TRAINER_IDLE_SECONDS=0, the
baseline) and with the worker's ready process (the default).

    .venv/bin/python bench/warm_start.py [--jobs 3] [--examples 10]

For each mode it starts `openft serve` on the embedded SmolLM2-135M-Instruct, then runs the jobs one
after another through the official SDK, each on its own small file (short chats, batch 1, 1 epoch),
and polls (every 20 ms) for the moment the job is `running` and for its first `metrics` event. The
first job of a run is the cold case for every mode (nothing was trained yet: the ready process
starts while its files are validated); the later ones are the steady state: submitted as soon as
the previous job ends ("back to back": the ready process, spawned as that job ended, may still be
importing), or once the ready process has settled ("warm base model": its memory stopped growing,
so its imports, model load and warm-up pass are done). It prints each job's
figures and the medians of the later jobs, and the first step's own length (the step's trained
tokens at the run's measured speed), which no start-up work can remove.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO / ".cache" / "test-models"
MODEL = "smollm2-135m-instruct"
POLL_S = 0.02


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def training_file(job: int, n: int) -> bytes:
    lines = []
    for i in range(n):
        messages = [
            {"role": "user", "content": f"Job {job}, question {i}: what is {i} plus {job}?"},
            {"role": "assistant", "content": f"{i} plus {job} is {i + job}."},
        ]
        lines.append(json.dumps({"messages": messages}))
    return ("\n".join(lines) + "\n").encode()


def serve(data_dir: Path, idle_seconds: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "OPENFT_DATA_DIR": str(data_dir),
        "OPENFT_MODELS_DIR": str(MODELS_DIR),
        "OPENFT_PORT": str(port),
        "OPENFT_PRELOAD_MODELS": "",
        "OPENFT_WORKER_POLL_SECONDS": "0.05",
        "OPENFT_WARM_TRAINER_IDLE_SECONDS": idle_seconds,
        "OPENFT_LOG_LEVEL": "WARNING",
    }
    log = (data_dir / "server.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "openft", "serve"], env=env, stdout=log, stderr=log)
    base_url = f"http://127.0.0.1:{port}/v1"
    client = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0, timeout=5)
    deadline = time.monotonic() + 120
    while True:
        try:
            client.models.list()
            return process, base_url
        except openai.APIConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"the server did not start; see {data_dir / 'server.log'}") from None
            time.sleep(0.2)


def time_job(client: openai.OpenAI, job_number: int, examples: int) -> dict[str, float]:
    file = client.files.create(file=("train.jsonl", training_file(job_number, examples)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=MODEL, training_file=file.id, hyperparameters={"n_epochs": 1, "batch_size": 1}
    )
    running_at = first_step_at = None
    while first_step_at is None:
        now = time.perf_counter()
        if running_at is None and client.fine_tuning.jobs.retrieve(job.id).status == "running":
            running_at = now
        if running_at is not None:
            events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
            if any(event.type == "metrics" for event in events):
                first_step_at = now
        time.sleep(POLL_S)
    while (current := client.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.2)
    if current.status != "succeeded":
        raise SystemExit(f"job {job.id} ended {current.status}: {current.error}")
    steps = [e for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data if e.type == "metrics"]
    assert running_at is not None
    trained = current.trained_tokens or 0
    return {"claim_to_first_step": first_step_at - running_at, "tokens_per_step": trained / max(len(steps), 1)}


def ready_process_rss(server_pid: int, timeout: float = 90) -> float | None:
    """GiB resident in the server's ready training process once it has settled (imports and model
    loaded: two samples a second apart within 1%), or None if none appears."""
    deadline, last = time.monotonic() + timeout, 0.0
    while time.monotonic() < deadline:
        rss = 0.0
        for children in Path(f"/proc/{server_pid}/task").glob("*/children"):
            for child in children.read_text().split():
                try:
                    if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                        status = Path(f"/proc/{child}/status").read_text()
                        rss = int(status.split("VmRSS:")[1].split()[0]) / 2**20
                except (OSError, IndexError):
                    continue
        if rss and abs(rss - last) < 0.01 * rss:
            return rss
        last = rss
        time.sleep(1.0)
    return None


def run_mode(name: str, idle_seconds: str, settle: bool, jobs: int, examples: int) -> list[dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="openft-warm-") as scratch:
        process, base_url = serve(Path(scratch), idle_seconds)
        try:
            client = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0, timeout=30)
            figures = []
            for number in range(1, jobs + 1):
                if settle and number > 1 and ready_process_rss(process.pid) is None:
                    raise SystemExit("no ready process appeared after a job")
                figures.append(time_job(client, number, examples))
                print(
                    f"{name} job {number}: claim -> first step {figures[-1]['claim_to_first_step']:.2f} s", flush=True
                )
            if idle_seconds != "0" and (rss := ready_process_rss(process.pid)) is not None:
                print(f"{name}: the ready process holds {rss:.2f} GiB while it waits", flush=True)
            return figures
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3, help="jobs per mode, one after another")
    parser.add_argument("--examples", type=int, default=10, help="examples per job's file")
    arguments = parser.parse_args()
    # (idle seconds, whether each job after the first waits until the ready process has settled)
    modes = {
        "fresh process per job": ("0", False),
        "ready, jobs back to back": ("600", False),
        "ready, warm base model": ("600", True),
    }
    results = {
        name: run_mode(name, idle, settle, arguments.jobs, arguments.examples) for name, (idle, settle) in modes.items()
    }
    print()
    print(f"{'mode':26}  {'first job':>9}  {'later jobs (median)':>19}")
    for name, figures in results.items():
        later = [f["claim_to_first_step"] for f in figures[1:]] or [float("nan")]
        print(f"{name:26}  {figures[0]['claim_to_first_step']:8.2f}s  {statistics.median(later):18.2f}s")
    print(f"(each first step trains about {results[next(iter(results))][0]['tokens_per_step']:.0f} tokens)")


if __name__ == "__main__":
    main()

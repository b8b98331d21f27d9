"""Each blob-store test runs on both stores: the data dir's directory and SeaweedFS's S3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openft.blobs import BlobStore, open_blob_store
from openft.config import Settings

PART_BYTES = 5 * 1024 * 1024  # S3's smallest part, so a test blob of megabytes goes up in parts


@pytest.fixture
def s3_store(seaweedfs: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BlobStore]:
    prefix = f"blobs-{tmp_path.name}"
    for variable, value in seaweedfs.env(prefix).items():
        monkeypatch.setenv(variable, value)
    yield open_blob_store(Settings(data_dir=tmp_path / "data", blob_part_bytes=PART_BYTES))


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "s3":
        s3: BlobStore = request.getfixturevalue("s3_store")
        return s3
    return open_blob_store(Settings(data_dir=tmp_path / "data", blob_url=None))

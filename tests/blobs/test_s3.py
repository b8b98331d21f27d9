"""What is particular to the S3 store, against SeaweedFS: multipart uploads, the local cache,
and a store that crosses into a training process."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from openft.blobs import BlobStore
from openft.blobs.s3 import S3BlobStore
from tests.blobs.conftest import PART_BYTES
from tests.blobs.test_stores import pattern


def test_a_large_blob_goes_up_in_parts_of_the_configured_size(s3_store: BlobStore, seaweedfs: Any) -> None:
    assert isinstance(s3_store, S3BlobStore)
    with s3_store.writer("files/big") as writer:
        writer.write_from(_Reader(pattern(2 * PART_BYTES + 3)))
        assert len(writer._buffer) < PART_BYTES  # at most one part held in memory
    head = seaweedfs.client().head_object(Bucket=s3_store.bucket, Key=s3_store.object_key("files/big"))
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload of three parts
    s3_store.put("files/small", b"tiny")
    head = seaweedfs.client().head_object(Bucket=s3_store.bucket, Key=s3_store.object_key("files/small"))
    assert "-" not in head["ETag"]  # one PUT
    assert seaweedfs.pending_multipart_uploads(s3_store.prefix) == []


def test_trees_are_downloaded_once_into_the_data_dirs_cache(
    s3_store: BlobStore, seaweedfs: Any, tmp_path: Path
) -> None:
    assert isinstance(s3_store, S3BlobStore)
    source = tmp_path / "adapter"
    source.mkdir()
    (source / "weights").write_bytes(b"w" * 1000)
    s3_store.upload_tree("jobs/j/checkpoints/step-1-x", source)
    assert seaweedfs.keys(s3_store.prefix) == ["jobs/j/checkpoints/step-1-x/weights"]
    local = s3_store.local_tree("jobs/j/checkpoints/step-1-x")
    assert local.is_relative_to(tmp_path / "data" / "cache")
    # Gone from the bucket behind the store's back: the cached copy still serves (no request).
    seaweedfs.client().delete_object(
        Bucket=s3_store.bucket, Key=s3_store.object_key("jobs/j/checkpoints/step-1-x/weights")
    )
    assert (s3_store.local_tree("jobs/j/checkpoints/step-1-x") / "weights").read_bytes() == b"w" * 1000
    assert [p.name for p in (tmp_path / "data" / "cache" / "blobs").iterdir()] == ["jobs"]  # no staging left


def test_the_store_crosses_into_another_process_as_its_settings(s3_store: BlobStore) -> None:
    s3_store.put("files/shared", b"seen by the child")
    copy = pickle.loads(pickle.dumps(s3_store))  # as a spawned training child receives it
    assert copy.read("files/shared") == b"seen by the child"


class _Reader:
    """A request body: read in pieces of the size asked for."""

    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def read(self, size: int) -> bytes:
        chunk = self.data[self.offset : self.offset + size]
        self.offset += len(chunk)
        return chunk

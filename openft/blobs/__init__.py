"""Bytes: uploaded files, Upload parts, checkpoints, result files and resume states, written
atomically, in a local directory or in S3-compatible object storage (`OPENFT_BLOB_URL`)."""

from __future__ import annotations

from openft.blobs.local import LocalBlobStore
from openft.blobs.store import BlobStore, BlobWriter
from openft.config import Settings

__all__ = ["BlobStore", "BlobWriter", "LocalBlobStore", "open_blob_store"]


def open_blob_store(settings: Settings) -> BlobStore:
    """The data dir's `blobs/` by default; object storage when OPENFT_BLOB_URL names a bucket."""
    if settings.blob_url is None:
        return LocalBlobStore(settings.blobs_dir)
    from openft.blobs.s3 import S3BlobStore  # boto3: only where object storage is used

    return S3BlobStore(settings.blob_url, settings.data_dir, part_bytes=settings.blob_part_bytes)

"""File bytes on disk, written atomically."""

from openft.blobs.local import BlobStore, BlobWriter

__all__ = ["BlobStore", "BlobWriter"]

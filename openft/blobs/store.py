"""What every blob store offers: the local directory (`local.py`) and S3-compatible object storage
(`s3.py`). Services see only this interface, never a path inside the store, so that a worker or an
API server on another machine works from the store alone.

Keys are `/`-separated (`files/file-…`, `uploads/{id}/{part}`, `jobs/{id}/checkpoints/step-N`); a
"tree" is every blob under `key/`, as a directory is. A blob appears whole or not at all."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol

CHUNK_SIZE = 1024 * 1024
TEMPORARY_PREFIX = ".tmp-"


class BlobWriter(Protocol):
    """Accumulates one blob; `commit` publishes it, `discard` drops it (nothing of it remains).
    As a context manager: commits when the block ends normally, discards when it raises."""

    size: int

    def write(self, data: bytes) -> None: ...

    def write_from(self, source: BinaryIO) -> None: ...

    def commit(self) -> None: ...

    def discard(self) -> None: ...

    def __enter__(self) -> BlobWriter: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class BlobStore(Protocol):
    def writer(self, key: str) -> BlobWriter: ...

    def put(self, key: str, data: bytes) -> None: ...

    def put_concatenation(self, key: str, sources: Iterable[str]) -> int:
        """Writes the blobs `sources` end to end as `key`; returns its size."""
        ...

    def read_chunks(self, key: str) -> Iterator[bytes]:
        """Opens the blob now (FileNotFoundError if there is none), so a missing one fails before a
        response starts streaming it."""
        ...

    def read(self, key: str) -> bytes: ...

    def size(self, key: str) -> int: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def delete_tree(self, key: str) -> None: ...

    def children(self, key: str) -> list[tuple[str, float]]:
        """(key, modified time) of the blobs and trees right under `key`; a tree's time is its
        newest blob's (or its own, locally)."""
        ...

    def tree_size(self, key: str) -> int:
        """The bytes of the blob `key`, or of the tree under it; 0 if neither exists."""
        ...

    def remove_stale_temporaries(self, older_than: float) -> tuple[int, int]:
        """Drops what writers that never committed nor discarded (a crash, a kill) left, begun
        before `older_than` (Unix seconds); returns how many and their bytes."""
        ...

    def work_dir(self, key: str) -> Path:
        """A local directory for a process to write what it will publish under `key` with
        `upload_tree`/`upload_file`: the tree's own place in a local store (publishing is then
        free), a working directory in the process's data dir for an object store."""
        ...

    def upload_tree(self, key: str, local_dir: Path) -> None:
        """Publishes the directory `local_dir` as the tree `key`; the directory is the store's
        afterwards (moved into place or uploaded and removed)."""
        ...

    def upload_file(self, key: str, local_file: Path) -> None:
        """Publishes `local_file` as the blob `key` (replacing it whole); the file is the store's
        afterwards."""
        ...

    def local_tree(self, key: str) -> Path:
        """The tree `key` as a local directory, to read only: in place locally; for an object
        store, a copy in this process's cache, downloaded once. Only for trees that never change
        once published (checkpoints): a cache entry is never refreshed."""
        ...

    def local_file(self, key: str) -> Path:
        """The blob `key` as a local file, to read only, cached like `local_tree`: only for blobs
        that never change once written (files)."""
        ...

    def fetch_file(self, key: str, destination: Path) -> Path:
        """The blob `key` as it is now, as a local file: in place locally, else downloaded to
        `destination` (for blobs that are replaced, such as resume states)."""
        ...

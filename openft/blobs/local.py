"""Bytes under a root directory. A blob appears whole or not at all: writers fill a temporary file
and rename it into place once it is flushed to disk."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

CHUNK_SIZE = 1024 * 1024


TEMPORARY_PREFIX = ".tmp-"


class BlobWriter:
    """Accumulates a blob in a temporary file; `commit` publishes it, `discard` drops it."""

    def __init__(self, final_path: Path) -> None:
        final_path.parent.mkdir(parents=True, exist_ok=True)
        self.final_path = final_path
        descriptor, temporary = tempfile.mkstemp(dir=final_path.parent, prefix=TEMPORARY_PREFIX)
        self._temporary = Path(temporary)
        self._file: BinaryIO = os.fdopen(descriptor, "wb")
        self.size = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.size += len(data)

    def write_from(self, source: BinaryIO) -> None:
        while chunk := source.read(CHUNK_SIZE):
            self.write(chunk)

    def commit(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._temporary, self.final_path)
        _fsync_directory(self.final_path.parent)

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._temporary.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None and not self._file.closed:
            self.commit()
        else:
            self.discard()


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        resolved = (self.root / key).resolve()
        if not resolved.is_relative_to(self.root.resolve()):
            raise ValueError(f"blob key {key!r} escapes the store")
        return resolved

    def writer(self, key: str) -> BlobWriter:
        return BlobWriter(self.path(key))

    def put(self, key: str, data: bytes) -> None:
        with self.writer(key) as writer:
            writer.write(data)

    def put_concatenation(self, key: str, sources: Iterable[str]) -> int:
        """Writes the blobs `sources` end to end as `key`; returns its size."""
        with self.writer(key) as writer:
            for source in sources:
                with self.path(source).open("rb") as part:
                    writer.write_from(part)
            return writer.size

    def read_chunks(self, key: str) -> Iterator[bytes]:
        """Opens the blob now, so a missing one fails before a response starts streaming it."""
        return _chunks(self.path(key).open("rb"))

    def read(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_tree(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)

    def children(self, prefix: str) -> list[tuple[str, float]]:
        """(key, modified time) of the blobs and folders right under `prefix`, temporaries aside."""
        folder = self.path(prefix)
        if not folder.is_dir():
            return []
        return [
            (f"{prefix}/{entry.name}", entry.stat().st_mtime)
            for entry in folder.iterdir()
            if not entry.name.startswith(TEMPORARY_PREFIX)
        ]

    def stale_temporaries(self, older_than: float) -> list[Path]:
        """Temporary files of writers that never committed or discarded (a crash, a kill)."""
        return [
            path
            for path in self.root.rglob(f"{TEMPORARY_PREFIX}*")
            if path.is_file() and path.stat().st_mtime < older_than
        ]

    def tree_size(self, prefix: str) -> int:
        path = self.path(prefix)
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _chunks(blob: BinaryIO) -> Iterator[bytes]:
    with blob:
        while chunk := blob.read(CHUNK_SIZE):
            yield chunk


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)

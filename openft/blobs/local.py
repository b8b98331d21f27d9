"""Bytes under a root directory. A blob appears whole or not at all: writers fill a temporary file
and rename it into place once it is flushed to disk. Keys are paths under the root, so the trees
and files that services ask for locally are the store's own (no copy)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from openft.blobs.store import CHUNK_SIZE, TEMPORARY_PREFIX


class LocalBlobWriter:
    """Accumulates a blob in a temporary file beside its final place."""

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

    def __enter__(self) -> LocalBlobWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None and not self._file.closed:
            self.commit()
        else:
            self.discard()


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """Where `key` lives. An absolute path inside the root is taken as its own key: resume
        states were once recorded by path."""
        resolved = (self.root / key).resolve()
        if not resolved.is_relative_to(self.root.resolve()):
            raise ValueError(f"blob key {key!r} escapes the store")
        return resolved

    def writer(self, key: str) -> LocalBlobWriter:
        return LocalBlobWriter(self.path(key))

    def put(self, key: str, data: bytes) -> None:
        with self.writer(key) as writer:
            writer.write(data)

    def put_concatenation(self, key: str, sources: Iterable[str]) -> int:
        with self.writer(key) as writer:
            for source in sources:
                with self.path(source).open("rb") as part:
                    writer.write_from(part)
            return writer.size

    def read_chunks(self, key: str) -> Iterator[bytes]:
        return _chunks(self.path(key).open("rb"))

    def read(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_tree(self, key: str) -> None:
        shutil.rmtree(self.path(key), ignore_errors=True)

    def children(self, key: str) -> list[tuple[str, float]]:
        folder = self.path(key)
        if not folder.is_dir():
            return []
        return [
            (f"{key}/{entry.name}", entry.stat().st_mtime)
            for entry in folder.iterdir()
            if not entry.name.startswith(TEMPORARY_PREFIX)
        ]

    def tree_size(self, key: str) -> int:
        path = self.path(key)
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0

    def remove_stale_temporaries(self, older_than: float) -> tuple[int, int]:
        count = freed = 0
        for path in self.root.rglob(f"{TEMPORARY_PREFIX}*"):
            try:
                stat = path.stat()
                if path.is_file() and stat.st_mtime < older_than:
                    path.unlink()
                    count, freed = count + 1, freed + stat.st_size
            except FileNotFoundError:  # committed or discarded meanwhile
                continue
        return count, freed

    def work_dir(self, key: str) -> Path:
        path = self.path(key)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def upload_tree(self, key: str, local_dir: Path) -> None:
        self._move_into_place(key, local_dir)

    def upload_file(self, key: str, local_file: Path) -> None:
        self._move_into_place(key, local_file)

    def local_tree(self, key: str) -> Path:
        path = self.path(key)
        if not path.is_dir():
            raise FileNotFoundError(f"no blob tree {key!r}")
        return path

    def local_file(self, key: str) -> Path:
        return self.path(key)

    def fetch_file(self, key: str, destination: Path) -> Path:
        return self.path(key)

    def _move_into_place(self, key: str, source: Path) -> None:
        """A rename when `source` is already on the store's disk (a work dir), else a copy
        renamed into place: either way the tree or file appears whole."""
        target = self.path(key)
        if source.resolve() == target:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.rmtree(target, ignore_errors=True)  # a tree is replaced whole, never merged
        try:
            os.replace(source, target)
        except OSError:  # another filesystem
            staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=TEMPORARY_PREFIX)) / "copy"
            if source.is_dir():
                shutil.copytree(source, staging)
                shutil.rmtree(source)
            else:
                shutil.copyfile(source, staging)
                source.unlink()
            os.replace(staging, target)
            staging.parent.rmdir()
        _fsync_directory(target.parent)


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

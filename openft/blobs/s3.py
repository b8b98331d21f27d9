"""Bytes in S3-compatible object storage (AWS S3, MinIO, SeaweedFS, ...), under `s3://bucket/prefix`.

Atomicity is S3's: an object appears when its PUT or CompleteMultipartUpload returns, whole; a
writer that is discarded aborts its multipart upload, so nothing of it stays. A writer holds at
most one part in memory (`part_bytes`): larger blobs go up as a multipart upload, part by part.

Trees (checkpoints) are read through a cache in this process's data dir: `local_tree` downloads
one once into a staging directory and renames it into place, so a cache entry is whole or absent.
Endpoint, credentials and region come from the usual AWS settings (`AWS_ENDPOINT_URL[_S3]`,
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, or the AWS config files).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, BinaryIO
from urllib.parse import urlparse

from openft.blobs.store import CHUNK_SIZE, TEMPORARY_PREFIX

MIN_PART_BYTES = 5 * 1024 * 1024  # S3's smallest part but the last
DELETE_BATCH = 1000  # the most keys one DeleteObjects takes
NOT_FOUND = {"NoSuchKey", "404", "NotFound"}


def parse_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix")."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"OPENFT_BLOB_URL {url!r} is not s3://bucket[/prefix]")
    return parsed.netloc, parsed.path.strip("/")


class S3BlobWriter:
    """Fills one part at a time; the first full part starts a multipart upload, a blob smaller
    than a part is one PUT at commit."""

    def __init__(self, store: S3BlobStore, key: str) -> None:
        self._store = store
        self._key = store.object_key(key)
        self._buffer = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._upload_id: str | None = None
        self._closed = False
        self.size = 0

    def write(self, data: bytes) -> None:
        self._buffer += data
        self.size += len(data)
        if len(self._buffer) >= self._store.part_bytes:
            self._send_part()

    def write_from(self, source: BinaryIO) -> None:
        while chunk := source.read(CHUNK_SIZE):
            self.write(chunk)

    def copy_part(self, source: str, size: int) -> None:
        """Appends the blob `source` by a server-side copy when it can be a part of its own (the
        buffer is empty and it is no smaller than a part), else by streaming it through."""
        if self._buffer or size < self._store.part_bytes:
            for chunk in self._store.read_chunks(source):
                self.write(chunk)
            return
        response = self._client.upload_part_copy(
            Bucket=self._store.bucket,
            Key=self._key,
            UploadId=self._multipart(),
            PartNumber=len(self._parts) + 1,
            CopySource={"Bucket": self._store.bucket, "Key": self._store.object_key(source)},
        )
        self._parts.append({"PartNumber": len(self._parts) + 1, "ETag": response["CopyPartResult"]["ETag"]})
        self.size += size

    def commit(self) -> None:
        try:
            if self._upload_id is None:
                self._client.put_object(Bucket=self._store.bucket, Key=self._key, Body=bytes(self._buffer))
            else:
                if self._buffer:
                    self._send_part()
                self._client.complete_multipart_upload(
                    Bucket=self._store.bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
                self._upload_id = None
        except BaseException:
            self.discard()
            raise
        self._closed = True
        self._buffer = bytearray()

    def discard(self) -> None:
        self._closed = True
        self._buffer = bytearray()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            self._client.abort_multipart_upload(Bucket=self._store.bucket, Key=self._key, UploadId=upload_id)

    def __enter__(self) -> S3BlobWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None and not self._closed:
            self.commit()
        else:
            self.discard()

    @property
    def _client(self) -> Any:
        return self._store.client

    def _multipart(self) -> str:
        if self._upload_id is None:
            created = self._client.create_multipart_upload(Bucket=self._store.bucket, Key=self._key)
            self._upload_id = created["UploadId"]
        return self._upload_id

    def _send_part(self) -> None:
        number = len(self._parts) + 1
        response = self._client.upload_part(
            Bucket=self._store.bucket,
            Key=self._key,
            UploadId=self._multipart(),
            PartNumber=number,
            Body=bytes(self._buffer),
        )
        self._parts.append({"PartNumber": number, "ETag": response["ETag"]})
        self._buffer = bytearray()


class S3BlobStore:
    """Picklable (a training child gets it in its run spec): the client is made in each process."""

    def __init__(self, url: str, local_dir: Path, part_bytes: int = 8 * 1024 * 1024) -> None:
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"a part must hold at least {MIN_PART_BYTES} bytes")
        self.bucket, self.prefix = parse_url(url)
        self.part_bytes = part_bytes
        self.cache_dir = local_dir / "cache" / "blobs"
        self.work_root = local_dir / "work"
        self._lock = threading.Lock()
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_lock": None, "_client": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    @property
    def client(self) -> Any:
        with self._lock:  # making a client is not thread-safe; using one is
            if self._client is None:
                import boto3
                from botocore.config import Config

                self._client = boto3.session.Session().client(
                    "s3",
                    region_name=os.environ.get("AWS_REGION") or None,
                    # Checksums only where S3 requires them: many S3-compatible servers refuse the rest.
                    config=Config(
                        request_checksum_calculation="when_required", response_checksum_validation="when_required"
                    ),
                )
            return self._client

    def object_key(self, key: str) -> str:
        parts = PurePosixPath(key).parts
        if not parts or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"blob key {key!r} is not a relative key")
        return f"{self.prefix}/{key}" if self.prefix else key

    # --- blobs --------------------------------------------------------------------------

    def writer(self, key: str) -> S3BlobWriter:
        return S3BlobWriter(self, key)

    def put(self, key: str, data: bytes) -> None:
        with self.writer(key) as writer:
            writer.write(data)

    def put_concatenation(self, key: str, sources: Iterable[str]) -> int:
        with self.writer(key) as writer:
            for source in sources:
                writer.copy_part(source, self.size(source))
            return writer.size

    def read_chunks(self, key: str) -> Iterator[bytes]:
        body = self._get(key)["Body"]
        return _chunks(body)

    def read(self, key: str) -> bytes:
        body = self._get(key)["Body"]
        with body:
            data: bytes = body.read()
        return data

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except FileNotFoundError:
            return False
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))
        self._forget(key)

    def delete_tree(self, key: str) -> None:
        keys = [item["Key"] for item in self._list(key)]
        for start in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": name} for name in keys[start : start + DELETE_BATCH]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        self._forget(key)

    def children(self, key: str) -> list[tuple[str, float]]:
        newest: dict[str, float] = {}
        base = self.object_key(key) + "/"
        for item in self._list(key):
            child = item["Key"][len(base) :].split("/", 1)[0]
            modified = item["LastModified"].timestamp()
            newest[child] = max(newest.get(child, modified), modified)
        return [(f"{key}/{child}", modified) for child, modified in newest.items()]

    def tree_size(self, key: str) -> int:
        try:
            return self.size(key)
        except FileNotFoundError:
            return sum(int(item["Size"]) for item in self._list(key))

    def remove_stale_temporaries(self, older_than: float) -> tuple[int, int]:
        """Multipart uploads begun before `older_than` and never completed nor aborted, and the
        staging copies of downloads into this process's cache that a crash cut short."""
        count = freed = 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._root_prefix()):
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() >= older_than:
                    continue
                parts = self.client.list_parts(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                freed += sum(int(part["Size"]) for part in parts.get("Parts", []))
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                count += 1
        for staging in self.cache_dir.glob(f"{TEMPORARY_PREFIX}*") if self.cache_dir.is_dir() else []:
            if staging.stat().st_mtime < older_than:
                freed += _local_size(staging)
                _remove(staging)
                count += 1
        return count, freed

    # --- local copies -------------------------------------------------------------------

    def work_dir(self, key: str) -> Path:
        self.object_key(key)  # a valid key
        path = self.work_root / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def upload_tree(self, key: str, local_dir: Path) -> None:
        uploaded = set()
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            name = path.relative_to(local_dir).as_posix()
            self._upload(f"{key}/{name}", path)
            uploaded.add(self.object_key(f"{key}/{name}"))
        # A tree is replaced whole: what an older tree of this key held and this one doesn't goes.
        stale = [item["Key"] for item in self._list(key) if item["Key"] not in uploaded]
        for start in range(0, len(stale), DELETE_BATCH):
            batch = [{"Key": name} for name in stale[start : start + DELETE_BATCH]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        shutil.rmtree(local_dir)

    def upload_file(self, key: str, local_file: Path) -> None:
        self._upload(key, local_file)
        local_file.unlink()

    def local_tree(self, key: str) -> Path:
        target = self.cache_dir / key
        if target.is_dir():
            return target
        items = self._list(key)
        if not items:
            raise FileNotFoundError(f"no blob tree {key!r}")
        base = self.object_key(key) + "/"
        staging = self._staging()
        for item in items:
            self._download(item["Key"], staging / item["Key"][len(base) :])
        return self._into_cache(staging, target)

    def local_file(self, key: str) -> Path:
        target = self.cache_dir / key
        if target.is_file():
            return target
        staging = self._staging()
        self._download(self.object_key(key), staging / "blob")
        return self._into_cache(staging / "blob", target, staging)

    def fetch_file(self, key: str, destination: Path) -> Path:
        destination.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=destination.parent, prefix=TEMPORARY_PREFIX)
        os.close(descriptor)
        try:
            self._download(self.object_key(key), Path(temporary))
            os.replace(temporary, destination)
        finally:
            Path(temporary).unlink(missing_ok=True)
        return destination

    # --- helpers ------------------------------------------------------------------------

    def _root_prefix(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def _get(self, key: str) -> dict[str, Any]:
        try:
            response: dict[str, Any] = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        except Exception as error:
            raise _not_found(error, key) from error
        return response

    def _head(self, key: str) -> dict[str, Any]:
        try:
            response: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except Exception as error:
            raise _not_found(error, key) from error
        return response

    def _list(self, key: str) -> list[dict[str, Any]]:
        """Every object under the tree `key`."""
        paginator = self.client.get_paginator("list_objects_v2")
        items: list[dict[str, Any]] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.object_key(key) + "/"):
            items.extend(page.get("Contents", []))
        return items

    def _upload(self, key: str, path: Path) -> None:
        with self.writer(key) as writer, path.open("rb") as source:
            writer.write_from(source)

    def _download(self, object_key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=object_key)["Body"]
        except Exception as error:
            raise _not_found(error, object_key) from error
        with body, path.open("wb") as file:
            for chunk in body.iter_chunks(CHUNK_SIZE):
                file.write(chunk)

    def _staging(self) -> Path:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=self.cache_dir, prefix=TEMPORARY_PREFIX))

    def _into_cache(self, source: Path, target: Path, staging: Path | None = None) -> Path:
        """Renames a whole download into place; another thread's that got there first wins."""
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source, target) if source.is_file() else source.rename(target)
        except OSError:
            if not target.exists():
                raise
        _remove(staging or source)
        return target

    def _forget(self, key: str) -> None:
        """Drops this process's cached copy of a deleted blob or tree (other processes' stay
        until their cache is cleared: nothing refers to them any more)."""
        _remove(self.cache_dir / key)


def _chunks(body: Any) -> Iterator[bytes]:
    with body:
        yield from body.iter_chunks(CHUNK_SIZE)


def _not_found(error: Exception, key: str) -> Exception:
    response = getattr(error, "response", None) or {}
    if response.get("Error", {}).get("Code") in NOT_FOUND:
        return FileNotFoundError(f"no blob {key!r}")
    return error


def _local_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)

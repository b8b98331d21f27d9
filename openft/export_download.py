"""`openft models export`: download a model's export from the server and unpack it into a folder.

The server builds the export first (loading and merging the weights: seconds to minutes), then
streams a .tar.gz; this shows how long the build has taken, then a progress bar over the bytes,
and unpacks while it downloads (the archive is never written to disk whole).
"""

from __future__ import annotations

import shutil
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx

CHUNK_BYTES = 1024 * 1024


class ExportFailed(Exception):
    """The server refused the export, or the download broke off; the message says why."""


def download_export(base_url: str, api_key: str, model: str, format: str, out: Path | None) -> Path:
    """Unpack the `format` export of `model` into `out` (default: the archive's folder name, here),
    which must not exist or be empty; returns `out`."""
    if out is not None:
        _check_free(out)
    url = f"{base_url.rstrip('/')}/models/{quote(model, safe='')}/export"
    headers = {"Authorization": f"Bearer {api_key}"}
    # No read timeout: the server sends nothing while it merges, which takes minutes for big models.
    timeout = httpx.Timeout(30.0, read=None)
    with (
        _Waiting(f"openft: preparing the {format} export of {model} on the server") as waiting,
        httpx.stream("GET", url, params={"format": format}, headers=headers, timeout=timeout) as response,
    ):
        waiting.done()
        if response.status_code != 200:
            response.read()
            raise ExportFailed(_error_message(response))
        if out is None:
            out = Path(_archive_folder(response))
            _check_free(out)
        total = int(response.headers.get("content-length", 0)) or None
        _unpack(response.iter_bytes(CHUNK_BYTES), total, out)
    return out


def _check_free(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportFailed(f"{out} exists and is not an empty folder")


def _archive_folder(response: httpx.Response) -> str:
    """The archive's name without .tar.gz, from `content-disposition: attachment; filename*=UTF-8''…`."""
    disposition = response.headers.get("content-disposition", "")
    _, _, encoded = disposition.partition("filename*=UTF-8''")
    name = Path(unquote(encoded.split(";")[0].strip())).name.removesuffix(".tar.gz")
    if not name or name.startswith("."):
        raise ExportFailed("the server sent no archive name: pass --out")
    return name


def _unpack(chunks: Iterator[bytes], total: int | None, out: Path) -> None:
    """Unpack the archive's one top folder as `out`, via a scratch folder beside it, so that an
    interrupted download leaves no half-filled `out`."""
    from tqdm import tqdm

    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with tqdm(total=total, unit="B", unit_scale=True, desc="downloading", file=sys.stderr) as bar:
            reader = _Reader(chunks, bar.update)
            with tarfile.open(fileobj=reader, mode="r|gz") as tar:  # type: ignore[call-overload]
                tar.extractall(scratch, filter="data")  # no absolute paths, links out, devices
        folders = [entry for entry in scratch.iterdir() if entry.is_dir()]
        if len(folders) != 1:
            raise ExportFailed("the archive does not hold exactly one folder")
        if out.exists():
            out.rmdir()  # empty, checked above
        folders[0].rename(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class _Reader:
    """A file-like `read` over the response's chunks, for tarfile's streaming mode (which reads
    small blocks and accepts short reads: no chunk is copied more than once)."""

    def __init__(self, chunks: Iterator[bytes], on_bytes: Any) -> None:
        self._chunks = chunks
        self._chunk = b""
        self._at = 0
        self._on_bytes = on_bytes

    def read(self, size: int = -1) -> bytes:
        while self._at >= len(self._chunk):
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._on_bytes(len(chunk))
            self._chunk, self._at = chunk, 0
        end = len(self._chunk) if size < 0 else self._at + size
        data = self._chunk[self._at : end]
        self._at += len(data)
        return data


class _Waiting:
    """Shows the seconds spent waiting on stderr (one updating line on a terminal)."""

    def __init__(self, message: str) -> None:
        self._message = message
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> _Waiting:
        print(f"{self._message}…", file=sys.stderr, flush=True)
        if sys.stderr.isatty():
            self._thread.start()
        return self

    def done(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            if self._thread.is_alive():
                self._thread.join()
                print(file=sys.stderr)
            print(f"openft: the server built it in {time.monotonic() - self._started:.0f} s", file=sys.stderr)

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            print(f"\r  {time.monotonic() - self._started:.0f} s", end="", file=sys.stderr, flush=True)


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"the server answered {response.status_code}"

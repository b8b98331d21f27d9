"""Exports: a fine-tuned model or checkpoint, written out for other tools and packed as a .tar.gz.

Whoever may use a model may export it (its organization, or one it is shared with: the same
lookup as chat). The export is built in a scratch directory under the data dir, packed, and the
directory removed; the caller streams the archive from `Export.open`, which removes it from disk.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from openft.config import Settings
from openft.errors import InvalidRequest, RateLimited
from openft.protocol.models import ExportFormat
from openft.service.catalog import ModelCatalog
from openft.service.models import BaseModelRegistry

log = logging.getLogger(__name__)

MANIFEST = "openft_export.json"
# Scratch directories older than this are leftovers of a crashed server, not downloads in progress.
STALE_EXPORT_SECONDS = 24 * 3600
BUSY_RETRY_SECONDS = 30
# The weights barely compress; level 1 gets most of what gzip can at a fraction of its time.
GZIP_LEVEL = 1


@dataclass(frozen=True)
class Export:
    archive: Path  # a .tar.gz whose members are under `folder/`
    folder: str  # the archive's top folder, also its file name without .tar.gz

    @property
    def filename(self) -> str:
        return f"{self.folder}.tar.gz"

    def open(self) -> BinaryIO:
        """The archive, open for reading, with its files already removed: an open file stays
        readable until closed, so nothing is left on disk however the download ends."""
        handle = self.archive.open("rb")
        shutil.rmtree(self.archive.parent, ignore_errors=True)
        return handle


class ExportService:
    def __init__(self, catalog: ModelCatalog, base_models: BaseModelRegistry, settings: Settings) -> None:
        self.catalog = catalog
        self.base_models = base_models
        self.settings = settings
        self._slots = threading.BoundedSemaphore(settings.max_concurrent_exports)

    def build(self, organization: str, model: str, format: ExportFormat) -> Export:
        """Export `model` (a fine-tuned model or checkpoint `organization` may use) as `format`.
        Takes as long as loading and merging the model does: call it off the event loop."""
        resolved = self.catalog.resolve(organization, model)  # 404 model_not_found unless usable
        if resolved.adapter_dir is None:
            raise InvalidRequest(
                f"The model `{model}` is a base model: only fine-tuned models and checkpoints can be exported.",
                param="model",
                code="base_model_not_exportable",
            )
        if not self._slots.acquire(blocking=False):
            raise RateLimited(
                f"{self.settings.max_concurrent_exports} model exports are being built already; try again later.",
                retry_after_seconds=BUSY_RETRY_SECONDS,
                limit=self.settings.max_concurrent_exports,
            )
        try:
            return self._build(model, resolved.base_model, resolved.adapter_dir, format)
        finally:
            self._slots.release()

    def _build(self, model: str, base_model: str, adapter_dir: Path, format: ExportFormat) -> Export:
        from openft.engine.export import export_merged, export_peft

        self._sweep()
        base_dir = self.base_models.local_directory(base_model)
        scratch = Path(tempfile.mkdtemp(prefix="export-", dir=self._root()))
        folder = f"{safe_name(model)}-{format}"
        try:
            out = scratch / folder
            started = time.monotonic()

            def progress(step: str) -> None:
                log.info("export %s: %s", model, step)

            if format == "merged":
                export_merged(adapter_dir, base_dir, out, progress=progress)
            elif format == "gguf":
                _export_gguf(adapter_dir, base_dir, out, progress=progress)
            else:
                export_peft(adapter_dir, base_dir, out, base_model_name_or_path=self._base_reference(base_model))
            _write_manifest(out, model=model, base_model=base_model, format=format)
            archive = scratch / f"{folder}.tar.gz"
            with tarfile.open(archive, "w:gz", compresslevel=GZIP_LEVEL) as tar:
                tar.add(out, arcname=folder)
            shutil.rmtree(out)  # only the archive stays until it is downloaded
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        log.info("exported %s as %s in %.1f s", model, format, time.monotonic() - started)
        return Export(archive, folder)

    def _base_reference(self, base_model: str) -> str:
        """What the adapter names as its base: a registered model's directory, or for the embedded
        model the Hub id of the weights it was quantized from (see docs/export.md)."""
        from openft.engine.embedded import EMBEDDED_HUB_ID

        directory = self.base_models.get(base_model).directory
        return str(directory.resolve()) if directory is not None else EMBEDDED_HUB_ID

    def _root(self) -> Path:
        root = self.settings.exports_dir
        root.mkdir(parents=True, exist_ok=True)
        return root

    def _sweep(self) -> None:
        """Remove the scratch directories of exports a crashed or killed server left behind."""
        cutoff = time.time() - STALE_EXPORT_SECONDS
        for leftover in self._root().glob("export-*"):
            try:
                stale = leftover.stat().st_mtime < cutoff
            except FileNotFoundError:  # another server's sweep was first
                continue
            if stale:
                shutil.rmtree(leftover, ignore_errors=True)


def _export_gguf(adapter_dir: Path, base_dir: Path, out: Path, *, progress: Callable[[str], None]) -> None:
    from openft.engine.gguf_export import GGUFUnsupported, export_gguf

    try:
        export_gguf(adapter_dir, base_dir, out, progress=progress)
    except GGUFUnsupported as error:  # found before any weights are loaded
        raise InvalidRequest(
            f"This model cannot be exported as GGUF: {error}. Export it as `merged` instead.",
            param="format",
            code="gguf_not_supported",
        ) from error


def safe_name(model: str) -> str:
    """A file name for a model name (`ft:base:org:suffix:id` → `ft-base-org-suffix-id`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-.") or "model"


def _write_manifest(out: Path, *, model: str, base_model: str, format: ExportFormat) -> None:
    manifest = {"model": model, "base_model": base_model, "format": format, "exported_at": int(time.time())}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

"""The garbage collector: gives back the disk that nothing needs any more.

It removes temporary files of writes that never finished, blobs that no row points to, expired
files (rows and bytes), the parts of expired Uploads, and the resume state of finished jobs. It
never removes what a row still points to, and leaves anything younger than the grace period
alone: a blob is written before its row, so a young blob without a row may be one being created.
Runs in every worker (`OPENFT_GC_INTERVAL_SECONDS`) and by hand as `openft gc`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from openft.blobs import BlobStore
from openft.config import Settings
from openft.service.lifecycle import TERMINAL
from openft.store import Database
from openft.store import files as file_rows
from openft.store import jobs as job_rows
from openft.store import uploads as upload_rows

log = logging.getLogger(__name__)


@dataclass
class GcReport:
    temporary_files: int = 0
    orphan_blobs: int = 0
    expired_files: int = 0
    expired_uploads: int = 0
    resume_states: int = 0
    bytes_freed: int = 0

    def __str__(self) -> str:
        return (
            f"removed {self.temporary_files} temporary files, {self.orphan_blobs} orphan blobs, "
            f"{self.expired_files} expired files, the parts of {self.expired_uploads} expired uploads and "
            f"{self.resume_states} resume states of finished jobs: {self.bytes_freed} bytes freed"
        )


class GarbageCollector:
    def __init__(self, database: Database, blobs: BlobStore, settings: Settings) -> None:
        self.database = database
        self.blobs = blobs
        self.settings = settings

    def collect(self, now: float | None = None) -> GcReport:
        """One pass; `now` (Unix seconds) is the time it judges expiry and age by."""
        now = time.time() if now is None else now
        before = now - self.settings.gc_grace_seconds
        report = GcReport()
        self._temporaries(before, report)
        self._expired_files(int(now), report)
        self._expired_uploads(int(now), report)
        self._orphan_files(before, report)
        self._orphan_uploads(before, int(now), report)
        self._resume_states(report)
        if report.bytes_freed or report.expired_files or report.expired_uploads:
            log.info("garbage collection %s", report)
        return report

    def _temporaries(self, before: float, report: GcReport) -> None:
        count, freed = self.blobs.remove_stale_temporaries(before)
        report.temporary_files += count
        report.bytes_freed += freed

    def _expired_files(self, now: int, report: GcReport) -> None:
        with self.database.transaction() as connection:
            expired = file_rows.expired_files(connection, now)
        for record in expired:
            with self.database.transaction() as connection:  # the row first: a listed file has its bytes
                deleted = file_rows.delete_file(connection, record.organization, record.id)
            if deleted:
                report.bytes_freed += self.blobs.tree_size(record.blob_key)
                self.blobs.delete(record.blob_key)
                report.expired_files += 1

    def _expired_uploads(self, now: int, report: GcReport) -> None:
        with self.database.transaction() as connection:
            expired = upload_rows.expired_pending_uploads(connection, now)
        for upload in expired:
            with self.database.transaction() as connection:  # the Upload's row stays: it reads `expired`
                upload_rows.delete_parts(connection, upload.id)
            report.bytes_freed += self.blobs.tree_size(f"uploads/{upload.id}")
            self.blobs.delete_tree(f"uploads/{upload.id}")
            report.expired_uploads += 1

    def _orphan_files(self, before: float, report: GcReport) -> None:
        old = [key for key, modified in self.blobs.children("files") if modified < before]
        if not old:
            return
        with self.database.transaction() as connection:
            known = file_rows.existing_file_ids(connection, [key.removeprefix("files/") for key in old])
        for key in old:
            if key.removeprefix("files/") not in known:
                report.bytes_freed += self.blobs.tree_size(key)
                self.blobs.delete(key)
                report.orphan_blobs += 1

    def _orphan_uploads(self, before: float, now: int, report: GcReport) -> None:
        """Parts of Uploads that are completed, cancelled, expired or unknown (a crash between
        finishing an Upload and deleting its parts)."""
        old = [key for key, modified in self.blobs.children("uploads") if modified < before]
        if not old:
            return
        with self.database.transaction() as connection:
            live = upload_rows.live_upload_ids(connection, [key.removeprefix("uploads/") for key in old], now)
        for key in old:
            if key.removeprefix("uploads/") not in live:
                report.bytes_freed += self.blobs.tree_size(key)
                self.blobs.delete_tree(key)
                report.orphan_blobs += 1

    def _resume_states(self, report: GcReport) -> None:
        with self.database.transaction() as connection:
            finished = job_rows.finished_jobs_with_resume_state(connection)
        for job in finished:
            with self.database.transaction() as connection:
                cleared = job_rows.update_job(connection, job.id, from_statuses=TERMINAL, resume_from=None)
            if cleared and job.resume_from and self._removable(job.resume_from):
                report.bytes_freed += self.blobs.tree_size(job.resume_from)
                self.blobs.delete(job.resume_from)
                report.resume_states += 1

    def _removable(self, key: str) -> bool:
        """A resume state still in the store (older rows hold a path: the local store's, if any)."""
        try:
            return self.blobs.exists(key)
        except ValueError:  # a path outside the store: not the collector's to remove
            return False

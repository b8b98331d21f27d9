"""Per-organization limits on what costs the server most: jobs created per hour, jobs active at
once, files and Uploads created per hour, and bytes stored. Counted from the database, so every API
process and restart agrees. Over a per-hour or at-once limit the answer is 429
`rate_limit_exceeded` with `retry-after` (when the oldest counted creation leaves the hour) and
`x-ratelimit-*-requests` headers, as OpenAI announces limits; the answer to every creation a limit
counted carries the same headers, saying what is left. Over the stored-bytes limit the answer is 400
`storage_quota_exceeded`, as OpenAI answers its file storage limit (waiting doesn't lift it).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from openft import ids
from openft.config import Settings
from openft.errors import QuotaExceeded, RateLimited, request_limit_headers, storage_limit_headers
from openft.store import files as file_rows
from openft.store import jobs as job_rows
from openft.store import locks

HOUR = 3600
ACTIVE_JOB_RETRY_SECONDS = 60  # an active job ends when it ends: look again in a minute


@dataclass(frozen=True)
class RequestAllowance:
    """What a per-hour or at-once limit leaves. `reset_seconds`: when `remaining` next goes up (the
    oldest counted creation leaves the hour), which at 0 remaining is the 429's `retry-after`."""

    limit: int
    remaining: int
    reset_seconds: int


@dataclass(frozen=True)
class StorageAllowance:
    limit: int
    stored: int

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.stored)


@dataclass
class Limits:
    """Filled in by a creation that quotas counted, in the transaction that made it; the API sends
    it as `x-ratelimit-*` headers on the answer."""

    requests: RequestAllowance | None = None
    storage: StorageAllowance | None = None

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.requests is not None:
            headers.update(
                request_limit_headers(self.requests.limit, self.requests.remaining, self.requests.reset_seconds)
            )
        if self.storage is not None:
            headers.update(storage_limit_headers(self.storage.limit, self.storage.remaining))
        return headers


class Quotas:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def check_new_job(self, connection: Connection, organization: str) -> None:
        """In the transaction that inserts the job, so concurrent creations can't both slip past."""
        _counting(connection, organization)
        limit = self.settings.jobs_per_hour
        _per_hour(job_rows.created_since(connection, organization, ids.now() - HOUR), limit, "fine-tuning jobs")
        active = job_rows.count_active(connection, organization)
        if active >= self.settings.max_active_jobs:
            raise RateLimited(
                f"Your organization has {active} fine-tuning jobs validating, queued or running, the most it may "
                f"have at once ({self.settings.max_active_jobs}). Retry when one has finished, or cancel one.",
                retry_after_seconds=ACTIVE_JOB_RETRY_SECONDS,
                limit=self.settings.max_active_jobs,
            )

    def job_allowance(self, connection: Connection, organization: str) -> RequestAllowance:
        """After a job was created: of the per-hour and the at-once limit, the one closer to refusing
        (the per-hour one on a tie, as the 429 checks it first)."""
        hourly = _hourly_allowance(
            job_rows.created_since(connection, organization, ids.now() - HOUR), self.settings.jobs_per_hour
        )
        active = self.settings.max_active_jobs - job_rows.count_active(connection, organization)
        if active < hourly.remaining:
            return RequestAllowance(self.settings.max_active_jobs, max(0, active), ACTIVE_JOB_RETRY_SECONDS)
        return hourly

    def check_new_upload(self, connection: Connection, organization: str) -> None:
        _counting(connection, organization)
        limit = self.settings.uploads_per_hour
        times = file_rows.uploaded_since(connection, organization, ids.now() - HOUR)
        _per_hour(times, limit, "files and Uploads")

    def upload_allowance(self, connection: Connection, organization: str) -> RequestAllowance:
        """After a file or an Upload was created."""
        times = file_rows.uploaded_since(connection, organization, ids.now() - HOUR)
        return _hourly_allowance(times, self.settings.uploads_per_hour)

    def storage(self, connection: Connection, organization: str) -> StorageAllowance:
        return StorageAllowance(
            self.settings.max_stored_bytes, file_rows.stored_bytes(connection, organization, ids.now())
        )

    def check_storage(self, connection: Connection, organization: str, adding: int, *, param: str) -> StorageAllowance:
        """In the transaction that records `adding` more bytes; returns what is stored with them."""
        _counting(connection, organization)
        storage = self.storage(connection, organization)
        if storage.stored + adding > storage.limit:
            raise storage_exceeded(storage, adding, param=param)
        return StorageAllowance(storage.limit, storage.stored + adding)


def _counting(connection: Connection, organization: str) -> None:
    """A check before the insert it guards: concurrent creations of one organization take turns
    from here to their commit, so two can't both count the state before the other's insert."""
    locks.serialize(connection, f"quotas:{organization}")


def storage_exceeded(storage: StorageAllowance, size: int, *, param: str, at_least: bool = False) -> QuotaExceeded:
    """`size` more bytes (`at_least`: a body stopped once it had more than that) don't fit."""
    what = f"more than {size}" if at_least else str(size)
    return QuotaExceeded(
        f"You have exceeded your file storage quota: your organization may hold {storage.limit} bytes of files "
        f"and pending Uploads and holds {storage.stored}, so {storage.remaining} are free, and this one is {what} "
        "bytes. Please delete old files or attempt with a smaller file size.",
        param=param,
        code="storage_quota_exceeded",
        headers=storage_limit_headers(storage.limit, storage.remaining),
    )


def _hourly_allowance(times: list[int], limit: int) -> RequestAllowance:
    """`times`: the counted creations of the last hour, oldest first, the new one among them."""
    reset = times[max(0, len(times) - limit)] + HOUR - ids.now() if times else 0  # as _per_hour's retry
    return RequestAllowance(limit, max(0, limit - len(times)), max(0, reset))


def _per_hour(times: list[int], limit: int, what: str) -> None:
    if len(times) < limit:
        return
    retry = max(1, times[len(times) - limit] + HOUR - ids.now())
    raise RateLimited(
        f"Rate limit reached: your organization may create {limit} {what} per hour. Retry in {retry} seconds.",
        retry_after_seconds=retry,
        limit=limit,
    )

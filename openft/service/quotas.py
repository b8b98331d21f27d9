"""Per-organization limits on what costs the server most: jobs created per hour, jobs active at
once, files and Uploads created per hour. Counted from the database, so every API process and
restart agrees; over a limit the answer is 429 `rate_limit_exceeded` with `retry-after` (when the
oldest counted creation leaves the hour) and `x-ratelimit-*` headers, as OpenAI announces limits.
"""

from __future__ import annotations

from sqlalchemy import Connection

from openft import ids
from openft.config import Settings
from openft.errors import RateLimited
from openft.store import files as file_rows
from openft.store import jobs as job_rows

HOUR = 3600
ACTIVE_JOB_RETRY_SECONDS = 60  # an active job ends when it ends: look again in a minute


class Quotas:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def check_new_job(self, connection: Connection, organization: str) -> None:
        """In the transaction that inserts the job, so concurrent creations can't both slip past."""
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

    def check_new_upload(self, connection: Connection, organization: str) -> None:
        limit = self.settings.uploads_per_hour
        times = file_rows.uploaded_since(connection, organization, ids.now() - HOUR)
        _per_hour(times, limit, "files and Uploads")


def _per_hour(times: list[int], limit: int, what: str) -> None:
    if len(times) < limit:
        return
    retry = max(1, times[len(times) - limit] + HOUR - ids.now())
    raise RateLimited(
        f"Rate limit reached: your organization may create {limit} {what} per hour. Retry in {retry} seconds.",
        retry_after_seconds=retry,
        limit=limit,
    )

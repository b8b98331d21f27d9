"""What the stored-bytes quota counts, on a real SQLite file: live files (result files too) and
pending Uploads' declared bytes; not deleted or expired files, nor finished or expired Uploads."""

from __future__ import annotations

from pathlib import Path

import pytest

from openft import ids
from openft.config import Settings
from openft.errors import QuotaExceeded
from openft.protocol.uploads import CompleteUploadRequest, CreateUploadRequest
from openft.service import Services, build_services
from openft.service.quotas import Limits
from openft.store import files as file_rows
from openft.store.schema import files, uploads


@pytest.fixture
def services(tmp_path: Path) -> Services:
    return build_services(Settings(data_dir=tmp_path / "data", preload_models="", max_stored_bytes=1000))


def stored(services: Services, organization: str = "org") -> int:
    with services.database.transaction() as connection:
        return file_rows.stored_bytes(connection, organization, ids.now())


def an_upload(services: Services, size: int, limits: Limits | None = None) -> str:
    request = CreateUploadRequest(bytes=size, filename="u", mime_type="text/plain", purpose="fine-tune")
    return services.uploads.create("org", request, limits).id


def test_what_counts(services: Services) -> None:
    services.files.store_generated("org", "step_metrics.csv", "fine-tune-results", b"x" * 100)
    services.files.record("org", "file-expiring", "e.jsonl", "fine-tune", 50, 3600)
    services.files.store_generated("rival", "theirs.csv", "fine-tune-results", b"y" * 400)
    deleted = services.files.store_generated("org", "gone.csv", "fine-tune-results", b"z" * 300)
    services.files.delete("org", deleted.id)
    pending = an_upload(services, 200)
    cancelled = an_upload(services, 100)
    services.uploads.cancel("org", cancelled)
    assert stored(services) == 100 + 50 + 200 and stored(services, "rival") == 400

    with services.database.transaction() as connection:  # an hour later, as far as the rows know
        connection.execute(files.update().where(files.c.id == "file-expiring").values(expires_at=ids.now()))
        connection.execute(uploads.update().where(uploads.c.id == pending).values(expires_at=ids.now()))
    assert stored(services) == 100


def test_an_upload_counts_once_its_declared_bytes_then_as_its_file(services: Services) -> None:
    limits = Limits()
    upload_id = an_upload(services, 5, limits)
    assert limits.storage is not None and (limits.storage.limit, limits.storage.remaining) == (1000, 995)
    assert limits.headers()["x-ratelimit-remaining-bytes"] == "995"
    part_id, writer = services.uploads.open_part_writer("org", upload_id)
    writer.write(b"12345")
    services.uploads.add_part("org", upload_id, part_id, writer)
    assert stored(services) == 5
    services.uploads.complete("org", upload_id, CompleteUploadRequest(part_ids=[part_id]))
    assert stored(services) == 5  # the file now, not the Upload as well


def test_over_the_quota_nothing_is_recorded(services: Services) -> None:
    an_upload(services, 900)
    with pytest.raises(QuotaExceeded) as refused:
        an_upload(services, 101)
    assert refused.value.code == "storage_quota_exceeded" and refused.value.param == "bytes"
    assert refused.value.headers() == {"x-ratelimit-limit-bytes": "1000", "x-ratelimit-remaining-bytes": "100"}
    an_upload(services, 100)  # exactly up to the limit is allowed
    assert stored(services) == 1000

    new_file = services.files.open_writer("org")
    assert new_file.max_bytes == 0  # the multipart reader stops the body at its first byte
    new_file.writer.write(b"x")
    with pytest.raises(QuotaExceeded):  # and should one slip in meanwhile, the record is refused
        services.files.create(
            "org", new_file.id, new_file.writer, filename="f", purpose="fine-tune", expires_after_seconds=None
        )
    assert not services.blobs.exists(f"files/{new_file.id}")
    assert services.files.list("org", purpose=None, after=None, limit=10, order="desc").data == []

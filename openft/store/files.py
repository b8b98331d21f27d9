"""Rows of uploaded and generated files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, RowMapping, delete, func, insert, or_, select

from openft.store.paging import Page, fetch_page
from openft.store.records import row_values
from openft.store.schema import files, uploads


@dataclass(frozen=True)
class FileRecord:
    id: str
    organization: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    expires_at: int | None
    status: str
    status_details: str | None
    blob_key: str

    @classmethod
    def from_row(cls, row: RowMapping) -> FileRecord:
        return cls(**row_values(cls, row))


def insert_file(connection: Connection, record: FileRecord) -> None:
    connection.execute(insert(files).values(**record.__dict__))


def get_file(connection: Connection, organization: str, file_id: str) -> FileRecord | None:
    row = (
        connection.execute(select(files).where(files.c.id == file_id, files.c.organization == organization))
        .mappings()
        .first()
    )
    return FileRecord.from_row(row) if row else None


def list_files(
    connection: Connection,
    organization: str,
    *,
    purpose: str | None,
    after: str | None,
    limit: int,
    order: Literal["asc", "desc"],
) -> tuple[list[FileRecord], bool]:
    conditions = [files.c.organization == organization]
    if purpose is not None:
        conditions.append(files.c.purpose == purpose)
    page: Page = fetch_page(connection, files, conditions, after=after, limit=limit, order=order)
    return [FileRecord.from_row(row) for row in page.rows], page.has_more


def delete_file(connection: Connection, organization: str, file_id: str) -> bool:
    result = connection.execute(delete(files).where(files.c.id == file_id, files.c.organization == organization))
    return result.rowcount > 0


def expired_files(connection: Connection, now: int) -> list[FileRecord]:
    rows = connection.execute(select(files).where(files.c.expires_at <= now)).mappings()
    return [FileRecord.from_row(row) for row in rows]


def existing_file_ids(connection: Connection, candidates: list[str]) -> set[str]:
    rows = connection.execute(select(files.c.id).where(files.c.id.in_(candidates))).scalars()
    return set(rows)


def uploaded_since(connection: Connection, organization: str, since: int) -> list[int]:
    """Creation times of the files and Uploads the organization created since `since` (not the
    files openft made itself, such as result files), oldest first."""
    made_here = ["fine-tune-results"]
    assembled = select(uploads.c.file_id).where(uploads.c.file_id.is_not(None))  # counted as their Upload
    file_times = select(files.c.created_at).where(
        files.c.organization == organization,
        files.c.created_at >= since,
        files.c.purpose.not_in(made_here),
        files.c.id.not_in(assembled),
    )
    upload_times = select(uploads.c.created_at).where(
        uploads.c.organization == organization, uploads.c.created_at >= since
    )
    return sorted([*connection.execute(file_times).scalars(), *connection.execute(upload_times).scalars()])


def stored_bytes(connection: Connection, organization: str, now: int) -> int:
    """Bytes the organization holds: its live files (not deleted, not expired; result files too)
    plus what its pending, unexpired Uploads were declared to hold, which they may still fill."""
    in_files = select(func.coalesce(func.sum(files.c.bytes), 0)).where(
        files.c.organization == organization, or_(files.c.expires_at.is_(None), files.c.expires_at > now)
    )
    in_uploads = select(func.coalesce(func.sum(uploads.c.bytes), 0)).where(
        uploads.c.organization == organization, uploads.c.status == "pending", uploads.c.expires_at > now
    )
    return int(connection.execute(in_files).scalar_one()) + int(connection.execute(in_uploads).scalar_one())

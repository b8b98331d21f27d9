"""Rows of multi-part Uploads and their parts."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, RowMapping, delete, insert, select, update

from openft.store.records import row_values
from openft.store.schema import upload_parts, uploads


@dataclass(frozen=True)
class UploadRecord:
    id: str
    organization: str
    filename: str
    purpose: str
    mime_type: str
    bytes: int
    created_at: int
    expires_at: int
    file_expires_at: int | None
    status: str
    file_id: str | None

    @classmethod
    def from_row(cls, row: RowMapping) -> UploadRecord:
        return cls(**row_values(cls, row))


@dataclass(frozen=True)
class UploadPartRecord:
    id: str
    upload_id: str
    created_at: int
    bytes: int
    blob_key: str

    @classmethod
    def from_row(cls, row: RowMapping) -> UploadPartRecord:
        return cls(**row_values(cls, row))


def insert_upload(connection: Connection, record: UploadRecord) -> None:
    connection.execute(insert(uploads).values(**record.__dict__))


def get_upload(connection: Connection, organization: str, upload_id: str) -> UploadRecord | None:
    row = (
        connection.execute(select(uploads).where(uploads.c.id == upload_id, uploads.c.organization == organization))
        .mappings()
        .first()
    )
    return UploadRecord.from_row(row) if row else None


def finish_upload(
    connection: Connection, upload_id: str, *, from_status: str, to_status: str, file_id: str | None = None
) -> bool:
    """Moves an upload out of `from_status`; False when another request got there first."""
    result = connection.execute(
        update(uploads)
        .where(uploads.c.id == upload_id, uploads.c.status == from_status)
        .values(status=to_status, file_id=file_id)
    )
    return result.rowcount == 1


def insert_part(connection: Connection, record: UploadPartRecord) -> None:
    connection.execute(insert(upload_parts).values(**record.__dict__))


def list_parts(connection: Connection, upload_id: str) -> list[UploadPartRecord]:
    rows = connection.execute(
        select(upload_parts).where(upload_parts.c.upload_id == upload_id).order_by(upload_parts.c.seq)
    ).mappings()
    return [UploadPartRecord.from_row(row) for row in rows]


def expired_pending_uploads(connection: Connection, now: int) -> list[UploadRecord]:
    query = select(uploads).where(uploads.c.status == "pending", uploads.c.expires_at <= now)
    return [UploadRecord.from_row(row) for row in connection.execute(query).mappings()]


def delete_parts(connection: Connection, upload_id: str) -> None:
    connection.execute(delete(upload_parts).where(upload_parts.c.upload_id == upload_id))


def live_upload_ids(connection: Connection, candidates: list[str], now: int) -> set[str]:
    """The candidates that are pending and not expired: the only Uploads whose parts are needed."""
    query = select(uploads.c.id).where(
        uploads.c.id.in_(candidates), uploads.c.status == "pending", uploads.c.expires_at > now
    )
    return set(connection.execute(query).scalars())

"""The Files API's rules: purposes, expiry, ownership, and bytes that outlive their rows never."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection

from openft import ids
from openft.blobs import BlobStore, BlobWriter
from openft.errors import InvalidRequest, NotFound, PayloadTooLarge, ServiceError
from openft.protocol.common import DeletedObject
from openft.protocol.files import (
    MAX_EXPIRY_SECONDS,
    MIN_EXPIRY_SECONDS,
    UPLOAD_PURPOSES,
    FileList,
    FileObject,
)
from openft.service.paging import known_cursor
from openft.service.quotas import Limits, Quotas, StorageAllowance, storage_exceeded
from openft.store import Database
from openft.store import files as file_rows
from openft.store.files import FileRecord

MAX_LIST_LIMIT = 10_000


def file_blob_key(file_id: str) -> str:
    return f"files/{file_id}"


def to_wire(record: FileRecord) -> FileObject:
    return FileObject(
        id=record.id,
        bytes=record.bytes,
        created_at=record.created_at,
        filename=record.filename,
        purpose=record.purpose,
        status=record.status,
        expires_at=record.expires_at,
        status_details=record.status_details,
    )


def parse_expires_after(anchor: str | None, seconds: str | int | None) -> int | None:
    """Validates `expires_after[anchor]` / `expires_after[seconds]`; returns the seconds or None."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise InvalidRequest(
            "expires_after[anchor] must be 'created_at'.", param="expires_after.anchor", code="invalid_value"
        )
    try:
        value = int(seconds) if seconds is not None else None
    except ValueError:
        value = None
    if value is None or not MIN_EXPIRY_SECONDS <= value <= MAX_EXPIRY_SECONDS:
        raise InvalidRequest(
            f"expires_after[seconds] must be an integer from {MIN_EXPIRY_SECONDS} to {MAX_EXPIRY_SECONDS}.",
            param="expires_after.seconds",
            code="invalid_value",
        )
    return value


def check_purpose(purpose: str | None) -> str:
    if not purpose:
        raise InvalidRequest(
            "Missing required parameter: 'purpose'.", param="purpose", code="missing_required_parameter"
        )
    if purpose not in UPLOAD_PURPOSES:
        raise InvalidRequest(
            # Echo a bounded prefix: a form field may be 64 KiB, an error message shouldn't.
            f"Invalid value for 'purpose': {purpose[:64]!r}{'…' if len(purpose) > 64 else ''}. "
            f"Expected one of {', '.join(UPLOAD_PURPOSES)}.",
            param="purpose",
            code="invalid_value",
        )
    return purpose


@dataclass
class NewFile:
    """A file being received: its id, the writer for its bytes, and the most bytes it may have."""

    id: str
    writer: BlobWriter
    max_bytes: int  # the smaller of OPENFT_MAX_UPLOAD_BYTES and the organization's storage left
    storage: StorageAllowance  # before this file
    max_upload_bytes: int

    def too_large(self, error: PayloadTooLarge) -> ServiceError:
        """The body was refused at `max_bytes` (by its Content-Length or while streaming): the
        storage quota's error when that was the smaller limit, else the per-file one."""
        if self.max_bytes < self.max_upload_bytes:
            return storage_exceeded(self.storage, self.max_bytes, param="file", at_least=True)
        return error


class FileService:
    def __init__(self, database: Database, blobs: BlobStore, quotas: Quotas) -> None:
        self.database = database
        self.blobs = blobs
        self.quotas = quotas

    def open_writer(self, organization: str) -> NewFile:
        """A new file id and a writer for its bytes; nothing is visible until `create` commits.
        429 first when the organization is at its hourly limit, before a byte is read; the body may
        then hold `max_bytes`: no more than OPENFT_MAX_UPLOAD_BYTES, nor than the storage quota leaves."""
        max_upload_bytes = self.quotas.settings.max_upload_bytes
        with self.database.transaction() as connection:
            self.quotas.check_new_upload(connection, organization)
            storage = self.quotas.storage(connection, organization)
        file_id = ids.new_id("file-", 22)
        return NewFile(
            id=file_id,
            writer=self.blobs.writer(file_blob_key(file_id)),
            max_bytes=min(max_upload_bytes, storage.remaining),
            storage=storage,
            max_upload_bytes=max_upload_bytes,
        )

    def create(
        self,
        organization: str,
        file_id: str,
        writer: BlobWriter,
        *,
        filename: str,
        purpose: str,
        expires_after_seconds: int | None,
        limits: Limits | None = None,
    ) -> FileObject:
        """Publishes the bytes in `writer`, then records the file, if the organization's storage
        quota still has room for them (another upload may have taken it meanwhile); the writer is
        consumed either way. `limits` receives what the quotas that counted it leave."""
        try:
            writer.commit()
        except BaseException:
            writer.discard()
            raise
        try:
            with self.database.transaction() as connection:
                storage = self.quotas.check_storage(connection, organization, writer.size, param="file")
                file_object = self.record(
                    organization, file_id, filename, purpose, writer.size, expires_after_seconds, connection
                )
                requests = self.quotas.upload_allowance(connection, organization)
        except BaseException:
            self.blobs.delete(file_blob_key(file_id))
            raise
        if limits is not None:
            limits.requests, limits.storage = requests, storage
        return file_object

    def record(
        self,
        organization: str,
        file_id: str,
        filename: str,
        purpose: str,
        size: int,
        expires_after_seconds: int | None,
        connection: Connection | None = None,
    ) -> FileObject:
        """Insert the row of a file whose bytes are in place; in `connection`'s transaction when
        given, so that it commits (or not) with what the caller writes there."""
        created_at = ids.now()
        record = FileRecord(
            id=file_id,
            organization=organization,
            filename=filename,
            purpose=purpose,
            bytes=size,
            created_at=created_at,
            expires_at=created_at + expires_after_seconds if expires_after_seconds else None,
            status="processed",
            status_details=None,
            blob_key=file_blob_key(file_id),
        )
        if connection is not None:
            file_rows.insert_file(connection, record)
        else:
            with self.database.transaction() as own:
                file_rows.insert_file(own, record)
        return to_wire(record)

    def store_generated(self, organization: str, filename: str, purpose: str, data: bytes) -> FileObject:
        """A file the service made itself, such as a job's result file."""
        file_id = ids.new_id("file-", 22)
        self.blobs.put(file_blob_key(file_id), data)
        return self.record(organization, file_id, filename, purpose, len(data), None)

    def get_record(self, organization: str, file_id: str) -> FileRecord:
        with self.database.transaction() as connection:
            record = file_rows.get_file(connection, organization, file_id)
        if record is None or _expired(record):
            raise NotFound(f"No such File object: {file_id}", param="id", code="not_found")
        return record

    def retrieve(self, organization: str, file_id: str) -> FileObject:
        return to_wire(self.get_record(organization, file_id))

    def open_content(self, organization: str, file_id: str) -> tuple[FileRecord, Iterator[bytes]]:
        record = self.get_record(organization, file_id)
        return record, self.blobs.read_chunks(record.blob_key)

    def list(
        self,
        organization: str,
        *,
        purpose: str | None,
        after: str | None,
        limit: int,
        order: Literal["asc", "desc"],
    ) -> FileList:
        with self.database.transaction() as connection, known_cursor(after, "File object"):
            records, has_more = file_rows.list_files(
                connection, organization, purpose=purpose, after=after, limit=limit, order=order
            )
        data = [to_wire(record) for record in records if not _expired(record)]
        return FileList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=has_more,
        )

    def delete(self, organization: str, file_id: str) -> DeletedObject:
        record = self.get_record(organization, file_id)
        with self.database.transaction() as connection:
            file_rows.delete_file(connection, organization, file_id)
        self.blobs.delete(record.blob_key)
        return DeletedObject(id=file_id, object="file", deleted=True)


def _expired(record: FileRecord) -> bool:
    return record.expires_at is not None and record.expires_at <= ids.now()

"""The Uploads API: a large file sent in parts, then assembled into an ordinary file."""

from __future__ import annotations

import hashlib

from openft import ids
from openft.blobs import BlobStore, BlobWriter
from openft.config import Settings
from openft.errors import InvalidRequest, NotFound
from openft.protocol.files import FileObject
from openft.protocol.uploads import CompleteUploadRequest, CreateUploadRequest, Upload, UploadPart
from openft.service.files import FileService, file_blob_key
from openft.service.quotas import Limits
from openft.store import Database, locks
from openft.store import uploads as upload_rows
from openft.store.uploads import UploadPartRecord, UploadRecord


def _part_blob_key(upload_id: str, part_id: str) -> str:
    return f"uploads/{upload_id}/{part_id}"


class UploadService:
    def __init__(self, database: Database, blobs: BlobStore, files: FileService, settings: Settings) -> None:
        self.database = database
        self.blobs = blobs
        self.files = files
        self.settings = settings

    def create(self, organization: str, request: CreateUploadRequest, limits: Limits | None = None) -> Upload:
        """Refused (400) when its declared `bytes` would take the organization over its storage quota:
        a pending Upload holds them until it completes, is cancelled or expires. `limits` receives
        what the quotas that counted it leave."""
        if request.bytes > self.settings.max_upload_total_bytes:
            raise InvalidRequest(
                f"An Upload can hold at most {self.settings.max_upload_total_bytes} bytes.",
                param="bytes",
                code="file_too_large",
            )
        created_at = ids.now()
        record = UploadRecord(
            id=ids.new_id("upload_"),
            organization=organization,
            filename=request.filename,
            purpose=request.purpose,
            mime_type=request.mime_type,
            bytes=request.bytes,
            created_at=created_at,
            expires_at=created_at + self.settings.upload_expiry_seconds,
            file_expires_at=request.expires_after.seconds if request.expires_after else None,
            status="pending",
            file_id=None,
        )
        quotas = self.files.quotas
        with self.database.transaction() as connection:
            quotas.check_new_upload(connection, organization)
            storage = quotas.check_storage(connection, organization, request.bytes, param="bytes")
            upload_rows.insert_upload(connection, record)
            requests = quotas.upload_allowance(connection, organization)
        if limits is not None:
            limits.requests, limits.storage = requests, storage
        return self._to_wire(record)

    def open_part_writer(self, organization: str, upload_id: str) -> tuple[str, BlobWriter]:
        self._pending(organization, upload_id)
        part_id = ids.new_id("part_")
        return part_id, self.blobs.writer(_part_blob_key(upload_id, part_id))

    def add_part(self, organization: str, upload_id: str, part_id: str, writer: BlobWriter) -> UploadPart:
        try:
            upload = self._pending(organization, upload_id)
            writer.commit()
        except BaseException:
            writer.discard()
            raise
        record = UploadPartRecord(
            id=part_id,
            upload_id=upload_id,
            created_at=ids.now(),
            bytes=writer.size,
            blob_key=_part_blob_key(upload_id, part_id),
        )
        with self.database.transaction() as connection:
            locks.serialize(connection, f"upload:{upload_id}")  # parts added at once count each other
            held = sum(part.bytes for part in upload_rows.list_parts(connection, upload_id))
            if held + record.bytes > upload.bytes:
                self.blobs.delete(record.blob_key)
                raise InvalidRequest(
                    f"This part would bring the Upload to {held + record.bytes} bytes, more than the "
                    f"{upload.bytes} bytes it was created for.",
                    param="data",
                    code="invalid_value",
                )
            upload_rows.insert_part(connection, record)
        return UploadPart(id=part_id, created_at=record.created_at, upload_id=upload_id)

    def complete(self, organization: str, upload_id: str, request: CompleteUploadRequest) -> Upload:
        upload = self._pending(organization, upload_id)
        with self.database.transaction() as connection:
            parts = {part.id: part for part in upload_rows.list_parts(connection, upload_id)}
        ordered = self._ordered_parts(parts, request.part_ids)
        total = sum(part.bytes for part in ordered)
        if total != upload.bytes:
            raise InvalidRequest(
                f"The parts hold {total} bytes but the Upload was created for {upload.bytes} bytes.",
                param="part_ids",
                code="invalid_value",
            )
        file_id = ids.new_id("file-", 22)
        self.blobs.put_concatenation(file_blob_key(file_id), (part.blob_key for part in ordered))
        if request.md5 is not None and request.md5.lower() != self._md5(file_blob_key(file_id)):
            self.blobs.delete(file_blob_key(file_id))
            raise InvalidRequest(
                "The md5 checksum does not match the assembled file.", param="md5", code="invalid_value"
            )
        # One transaction: a crash can't leave a completed Upload whose file has no row.
        with self.database.transaction() as connection:
            if not upload_rows.finish_upload(
                connection, upload_id, from_status="pending", to_status="completed", file_id=file_id
            ):
                self.blobs.delete(file_blob_key(file_id))
                raise InvalidRequest(
                    f"Upload {upload_id} is no longer pending.", param="upload_id", code="invalid_state"
                )
            file_object = self.files.record(
                organization, file_id, upload.filename, upload.purpose, total, upload.file_expires_at, connection
            )
        self.blobs.delete_tree(f"uploads/{upload_id}")
        completed = self._get(organization, upload_id)
        return self._to_wire(completed, file_object=file_object)

    def cancel(self, organization: str, upload_id: str) -> Upload:
        self._pending(organization, upload_id)
        with self.database.transaction() as connection:
            if not upload_rows.finish_upload(connection, upload_id, from_status="pending", to_status="cancelled"):
                raise InvalidRequest(
                    f"Upload {upload_id} is no longer pending.", param="upload_id", code="invalid_state"
                )
        self.blobs.delete_tree(f"uploads/{upload_id}")
        return self._to_wire(self._get(organization, upload_id))

    def _ordered_parts(self, parts: dict[str, UploadPartRecord], part_ids: list[str]) -> list[UploadPartRecord]:
        if len(set(part_ids)) != len(part_ids):
            raise InvalidRequest("part_ids lists a part more than once.", param="part_ids", code="invalid_value")
        missing = [part_id for part_id in part_ids if part_id not in parts]
        if missing:
            raise InvalidRequest(f"No such Part for this Upload: {missing[0]}", param="part_ids", code="invalid_value")
        return [parts[part_id] for part_id in part_ids]

    def _md5(self, key: str) -> str:
        digest = hashlib.md5(usedforsecurity=False)
        for chunk in self.blobs.read_chunks(key):
            digest.update(chunk)
        return digest.hexdigest()

    def _get(self, organization: str, upload_id: str) -> UploadRecord:
        with self.database.transaction() as connection:
            record = upload_rows.get_upload(connection, organization, upload_id)
        if record is None:
            raise NotFound(f"No such Upload object: {upload_id}", param="upload_id", code="not_found")
        return record

    def _pending(self, organization: str, upload_id: str) -> UploadRecord:
        record = self._get(organization, upload_id)
        status = self._status(record)
        if status != "pending":
            raise InvalidRequest(
                f"Upload {upload_id} is {status}, not pending.", param="upload_id", code="invalid_state"
            )
        return record

    def _status(self, record: UploadRecord) -> str:
        if record.status == "pending" and record.expires_at <= ids.now():
            return "expired"
        return record.status

    def _to_wire(self, record: UploadRecord, file_object: FileObject | None = None) -> Upload:
        file = (
            file_object
            if file_object is not None
            else (self.files.retrieve(record.organization, record.file_id) if record.file_id else None)
        )
        return Upload(
            id=record.id,
            bytes=record.bytes,
            created_at=record.created_at,
            expires_at=record.expires_at,
            filename=record.filename,
            purpose=record.purpose,
            status=self._status(record),
            file=file,
        )

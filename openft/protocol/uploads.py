"""`Upload` and `UploadPart`, as `openai.types.Upload` and `openai.types.uploads.UploadPart` have them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from openft.protocol.files import MAX_FILENAME_CHARS, MAX_ID_CHARS, MAX_MIME_TYPE_CHARS, FileObject, FilePurpose


class ExpiresAfter(BaseModel):
    anchor: Literal["created_at"]
    seconds: int = Field(ge=3600, le=2_592_000)


class CreateUploadRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    bytes: int = Field(ge=0)
    filename: str = Field(min_length=1, max_length=MAX_FILENAME_CHARS)
    mime_type: str = Field(min_length=1, max_length=MAX_MIME_TYPE_CHARS)
    purpose: FilePurpose
    expires_after: ExpiresAfter | None = None


class CompleteUploadRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    part_ids: list[Annotated[str, Field(max_length=MAX_ID_CHARS)]]
    md5: str | None = Field(None, max_length=64)


class Upload(BaseModel):
    id: str
    object: Literal["upload"] = "upload"
    bytes: int
    created_at: int
    expires_at: int
    filename: str
    purpose: str
    status: Literal["pending", "completed", "cancelled", "expired"]
    file: FileObject | None = None


class UploadPart(BaseModel):
    id: str
    object: Literal["upload.part"] = "upload.part"
    created_at: int
    upload_id: str

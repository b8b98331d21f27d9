"""`FileObject` and the Files API's lists, as `openai.types.FileObject` has them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

FilePurpose = Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]
UPLOAD_PURPOSES: tuple[str, ...] = FilePurpose.__args__  # type: ignore[attr-defined]
MIN_EXPIRY_SECONDS = 3600
MAX_EXPIRY_SECONDS = 2_592_000
# Bounds of strings that are stored and sent back (over one: 400 naming the field). Ids are
# openft's own (`file-…`, `part_…`), never longer than the store's 64 characters.
MAX_ID_CHARS = 64
MAX_FILENAME_CHARS = 512
MAX_MIME_TYPE_CHARS = 255  # RFC 6838: type and subtype of 127 characters at most each


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"]
    expires_at: int | None = None
    status_details: str | None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool

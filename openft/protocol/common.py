"""Shapes shared by every resource: the error envelope and deletion receipts."""

from __future__ import annotations

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class DeletedObject(BaseModel):
    id: str
    object: str
    deleted: bool = True

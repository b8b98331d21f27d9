"""Shapes shared by every resource: the error envelope and deletion receipts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ErrorDetail(BaseModel):
    # Every error body has all four keys (`param` and `code` may be null): so says the OpenAPI document.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

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

"""Checkpoint permissions, as `openai.types.fine_tuning.checkpoints` has them. In openft a
`project_id` names an organization (one of those the keys name)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# An organization's name is stored in 128 characters; its `org-` id adds four.
MAX_PROJECT_ID_CHARS = 132
MAX_PROJECT_IDS = 100
PermissionOrder = Literal["ascending", "descending"]


class CreatePermissionRequest(BaseModel):
    """The body of `POST /v1/fine_tuning/checkpoints/{checkpoint}/permissions`."""

    model_config = ConfigDict(extra="ignore")

    project_ids: list[Annotated[str, Field(min_length=1, max_length=MAX_PROJECT_ID_CHARS)]] = Field(
        min_length=1, max_length=MAX_PROJECT_IDS
    )


class CheckpointPermission(BaseModel):
    id: str
    object: Literal["checkpoint.permission"] = "checkpoint.permission"
    created_at: int
    project_id: str


class PermissionList(BaseModel):
    """Both what a creation answers (a plain page) and a page of the list (paged by `last_id`)."""

    object: Literal["list"] = "list"
    data: list[CheckpointPermission]
    first_id: str | None
    last_id: str | None
    has_more: bool

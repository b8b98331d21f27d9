"""`Model` and the Models API's list, as `openai.types.Model` has them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

# Longest model name a request may give: base ids are the operator's, and a fine-tuned model's or
# checkpoint's name adds the organization, the suffix and its id to one (`ft:{base}:{org}:…`).
MAX_MODEL_CHARS = 1024

# What GET /v1/models/{model}/export writes (an openft extension, docs/export.md).
ExportFormat = Literal["peft", "merged", "gguf"]


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]

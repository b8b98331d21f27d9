"""The report of `GET /v1/files/{file_id}/check`, an openft extension: what `openft data check`
prints for a local file, for an uploaded one (docs/dashboard.md#the-data-check-route)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class LineProblem(BaseModel):
    line: int  # 1-based; 0 for the file as a whole (too few examples)
    code: str
    message: str


class TokenDistribution(BaseModel):
    min: int
    max: int
    mean: float
    p50: float
    p90: float


class DataCheckReport(BaseModel):
    object: Literal["file.check"] = "file.check"
    file_id: str
    filename: str
    model: str
    format: str | None
    n_examples: int
    n_errors: int
    errors: list[LineProblem]  # the first 100
    tokens: TokenDistribution | None
    preferred_tokens: TokenDistribution | None
    non_preferred_tokens: TokenDistribution | None
    context_length: int
    n_over_context: int
    n_without_system: int
    n_without_assistant: int
    n_duplicates: int
    n_epochs: int
    trained_tokens: int
    tokens_per_second: float | None
    estimated_seconds: float | None
    problems: list[str]

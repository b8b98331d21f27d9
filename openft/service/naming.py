"""Names of fine-tuned models and checkpoints, as OpenAI forms them:
`ft:{base}:{org}:{suffix}:{id}` and `ft:{base}:{org}:{suffix}:{id}:ckpt-step-{N}` (each checkpoint
with its own random id). Without a suffix the segment is empty: `ft:base:org::id`."""

from __future__ import annotations

from openft import ids

MODEL_ID_LENGTH = 8


def organization_id(organization: str) -> str:
    return organization if organization.startswith("org-") else f"org-{organization}"


def fine_tuned_model_name(base_model: str, organization: str, suffix: str | None) -> str:
    return f"ft:{base_model}:{organization}:{suffix or ''}:{ids.random_token(MODEL_ID_LENGTH)}"


def checkpoint_name(base_model: str, organization: str, suffix: str | None, step: int) -> str:
    return f"{fine_tuned_model_name(base_model, organization, suffix)}:ckpt-step-{step}"

"""/v1/files/{file_id}/check: `openft data check` for an uploaded file (an openft extension)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from openft.api.dependencies import CallerDep, ServicesDep
from openft.protocol.data_check import DataCheckReport
from openft.protocol.models import MAX_MODEL_CHARS
from openft.service.hyperparameters import MAX_EPOCHS

router = APIRouter(prefix="/files", tags=["files"])


@router.get("/{file_id}/check")
def check_file(
    file_id: str,
    services: ServicesDep,
    caller: CallerDep,
    model: Annotated[str | None, Query(max_length=MAX_MODEL_CHARS)] = None,
    n_epochs: Annotated[int | None, Query(ge=1, le=MAX_EPOCHS)] = None,
    estimate: bool = True,
    validation: bool = False,
) -> DataCheckReport:
    """The checks a job's validation runs, token counts with `model`'s tokenizer (a base model, or a
    fine-tuned model the caller may use; by default the first base model), and, with `estimate`
    and no errors, the training time expected on this machine; with `validation`, checked as a job's
    `validation_file` (one example is enough). Authorized like the file itself."""
    return services.data_check.check(
        caller.organization, file_id, model=model, n_epochs=n_epochs, estimate=estimate, validation=validation
    )

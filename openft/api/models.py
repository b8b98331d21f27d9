"""/v1/models. Ids may hold `/` (sent as `%2F`, decoded before routing), hence the path converter."""

from __future__ import annotations

from fastapi import APIRouter

from openft.api.dependencies import CallerDep, ServicesDep
from openft.protocol.common import DeletedObject
from openft.protocol.models import Model, ModelList

router = APIRouter(prefix="/models", tags=["models"])


@router.get("")
def list_models(services: ServicesDep, caller: CallerDep) -> ModelList:
    return services.models.list(caller.organization)


@router.get("/{model_id:path}")
def retrieve_model(model_id: str, services: ServicesDep, caller: CallerDep) -> Model:
    return services.models.retrieve(caller.organization, model_id)


@router.delete("/{model_id:path}")
def delete_model(model_id: str, services: ServicesDep, caller: CallerDep) -> DeletedObject:
    return services.models.delete(caller.organization, model_id)

"""/v1/fine_tuning/checkpoints/{fine_tuned_model_checkpoint}/permissions. The checkpoint is a model name
(`ft:…:ckpt-step-N`, colons kept literal by the SDKs, a `/` of a base id sent as `%2F` and decoded
before routing), hence the path converter."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from openft.api.dependencies import CallerDep, ServicesDep
from openft.protocol.common import DeletedObject
from openft.protocol.permissions import MAX_PROJECT_ID_CHARS, CreatePermissionRequest, PermissionList, PermissionOrder

router = APIRouter(prefix="/fine_tuning/checkpoints", tags=["fine-tuning"])
Limit = Annotated[int, Query(ge=1, le=10_000)]


@router.post("/{fine_tuned_model_checkpoint:path}/permissions")
def create_permissions(
    fine_tuned_model_checkpoint: str, body: CreatePermissionRequest, services: ServicesDep, caller: CallerDep
) -> PermissionList:
    return services.permissions.create(
        caller.organization, fine_tuned_model_checkpoint, body.project_ids, admin=caller.admin
    )


@router.get("/{fine_tuned_model_checkpoint:path}/permissions")
def list_permissions(
    fine_tuned_model_checkpoint: str,
    services: ServicesDep,
    caller: CallerDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 10,
    order: PermissionOrder = "descending",
    project_id: Annotated[str | None, Query(max_length=MAX_PROJECT_ID_CHARS)] = None,
) -> PermissionList:
    return services.permissions.list(
        caller.organization,
        fine_tuned_model_checkpoint,
        admin=caller.admin,
        after=after,
        limit=limit,
        order=order,
        project_id=project_id,
    )


@router.delete("/{fine_tuned_model_checkpoint:path}/permissions/{permission_id}")
def delete_permission(
    fine_tuned_model_checkpoint: str, permission_id: str, services: ServicesDep, caller: CallerDep
) -> DeletedObject:
    return services.permissions.delete(
        caller.organization, fine_tuned_model_checkpoint, permission_id, admin=caller.admin
    )

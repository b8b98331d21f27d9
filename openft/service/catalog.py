"""Every model a caller can use: the base models, the fine-tuned models and checkpoints of the
caller's organization, and those other organizations share with it (checkpoint permissions).
Resolves a model name to what the engine loads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from openft.blobs import BlobStore
from openft.errors import InvalidRequest, PermissionDenied
from openft.protocol.common import DeletedObject
from openft.protocol.models import Model, ModelList
from openft.service.models import BaseModelRegistry, model_not_found
from openft.store import Database
from openft.store import checkpoints as checkpoint_rows
from openft.store import permissions as permission_rows
from openft.store.checkpoints import CheckpointRecord


@dataclass(frozen=True)
class ResolvedModel:
    """A model name as the engine sees it: a base model, plus a LoRA adapter for fine-tuned ones."""

    name: str
    base_model: str
    adapter_dir: Path | None


class ModelCatalog:
    """A fine-tuned model or checkpoint is usable by its own organization and by every organization
    it is shared with; only its own may delete it or change who it is shared with. Every call reads
    the database, so a permission granted or deleted counts from the next request on."""

    def __init__(self, database: Database, blobs: BlobStore, base_models: BaseModelRegistry) -> None:
        self.database = database
        self.blobs = blobs
        self.base_models = base_models
        self.on_delete: list[Callable[[str], None]] = []

    def list(self, organization: str) -> ModelList:
        with self.database.transaction() as connection:
            fine_tuned = checkpoint_rows.fine_tuned_models(connection, organization)
            shared = permission_rows.shared_checkpoints(connection, organization)
        models = [*fine_tuned, *shared]
        return ModelList(data=[*self.base_models.list().data, *(_to_wire(c) for c in models)])

    def retrieve(self, organization: str, name: str) -> Model:
        base = self.base_models.find(name)
        if base is not None:
            return base.to_wire()
        return _to_wire(self.usable_checkpoint(organization, name)[0])

    def resolve(self, organization: str, name: str) -> ResolvedModel:
        if self.base_models.find(name) is not None:
            return ResolvedModel(name=name, base_model=name, adapter_dir=None)
        checkpoint, base_model = self.usable_checkpoint(organization, name)
        # Checkpoints never change once published: a server's cached copy of one is never stale.
        adapter_dir = self.blobs.local_tree(checkpoint.blob_key)
        return ResolvedModel(name=name, base_model=base_model, adapter_dir=adapter_dir)

    def delete(self, organization: str, name: str) -> DeletedObject:
        if self.base_models.find(name) is not None:
            raise InvalidRequest(
                f"The model `{name}` is a base model and can't be deleted; only fine-tuned models can.",
                param="model",
                code="base_model_not_deletable",
            )
        checkpoint, _ = self.owned_checkpoint(organization, name)
        with self.database.transaction() as connection:
            checkpoint_rows.delete_checkpoint(connection, checkpoint.id)  # and its permissions (cascade)
        for forget in self.on_delete:
            forget(name)
        self.blobs.delete_tree(checkpoint.blob_key)
        return DeletedObject(id=name, object="model", deleted=True)

    def usable_checkpoint(self, organization: str, name: str, *, param: str = "model") -> tuple[CheckpointRecord, str]:
        """The fine-tuned model or checkpoint named `name`, if `organization` may use it (its own,
        or another organization's shared with it by a checkpoint permission), and the base model it
        was trained from. Otherwise 404 `model_not_found` naming `param`, as for a name that
        doesn't exist, so nobody learns of others' models. Base models are not checkpoints: look
        them up in `base_models` first. A job that starts from a checkpoint loads its adapter from
        `blobs.local_tree(record.blob_key)`; `record.organization` is the owner, not the caller."""
        checkpoint, base_model, _ = self._find(organization, name, param)
        return checkpoint, base_model

    def owned_checkpoint(self, organization: str, name: str, *, param: str = "model") -> tuple[CheckpointRecord, str]:
        """Like `usable_checkpoint`, but only the organization's own: to delete it or manage its
        permissions. One only shared with `organization` is a 403 `insufficient_permissions`."""
        checkpoint, base_model, shared = self._find(organization, name, param)
        if shared:
            raise PermissionDenied(
                f"The model `{name}` belongs to the organization `{checkpoint.organization}`, which shares it "
                "with yours: you may use it, but only its own organization can delete it or change whom it "
                "is shared with.",
                param=param,
                code="insufficient_permissions",
            )
        return checkpoint, base_model

    def _find(self, organization: str, name: str, param: str) -> tuple[CheckpointRecord, str, bool]:
        """The checkpoint, its base model, and whether it is only shared with `organization`."""
        with self.database.transaction() as connection:
            found = checkpoint_rows.find_model(connection, name)
            if found is None:
                raise model_not_found(name, param=param)
            checkpoint, base_model = found
            if checkpoint.organization == organization:
                return checkpoint, base_model, False
            if permission_rows.find_permission(connection, checkpoint.id, organization) is None:
                raise model_not_found(name, param=param)
        return checkpoint, base_model, True


def _to_wire(checkpoint: CheckpointRecord) -> Model:
    return Model(id=checkpoint.name, created=checkpoint.created_at, owned_by=checkpoint.organization)

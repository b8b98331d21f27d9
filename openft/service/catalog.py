"""Every model a caller can use: the base models, and the fine-tuned models and checkpoints of
the caller's organization. Resolves a model name to what the engine loads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from openft.blobs import BlobStore
from openft.errors import InvalidRequest
from openft.protocol.common import DeletedObject
from openft.protocol.models import Model, ModelList
from openft.service.models import BaseModelRegistry, model_not_found
from openft.store import Database
from openft.store import checkpoints as checkpoint_rows
from openft.store.checkpoints import CheckpointRecord


@dataclass(frozen=True)
class ResolvedModel:
    """A model name as the engine sees it: a base model, plus a LoRA adapter for fine-tuned ones."""

    name: str
    base_model: str
    adapter_dir: Path | None


class ModelCatalog:
    def __init__(self, database: Database, blobs: BlobStore, base_models: BaseModelRegistry) -> None:
        self.database = database
        self.blobs = blobs
        self.base_models = base_models
        self.on_delete: list[Callable[[str], None]] = []

    def list(self, organization: str) -> ModelList:
        with self.database.transaction() as connection:
            fine_tuned = checkpoint_rows.fine_tuned_models(connection, organization)
        return ModelList(data=[*self.base_models.list().data, *(_to_wire(c) for c in fine_tuned)])

    def retrieve(self, organization: str, name: str) -> Model:
        base = self.base_models.find(name)
        if base is not None:
            return base.to_wire()
        return _to_wire(self._checkpoint(organization, name)[0])

    def resolve(self, organization: str, name: str) -> ResolvedModel:
        if self.base_models.find(name) is not None:
            return ResolvedModel(name=name, base_model=name, adapter_dir=None)
        checkpoint, base_model = self._checkpoint(organization, name)
        return ResolvedModel(name=name, base_model=base_model, adapter_dir=self.blobs.path(checkpoint.blob_key))

    def delete(self, organization: str, name: str) -> DeletedObject:
        if self.base_models.find(name) is not None:
            raise InvalidRequest(
                f"The model `{name}` is a base model and can't be deleted; only fine-tuned models can.",
                param="model",
                code="base_model_not_deletable",
            )
        checkpoint, _ = self._checkpoint(organization, name)
        with self.database.transaction() as connection:
            checkpoint_rows.delete_checkpoint(connection, checkpoint.id)
        for forget in self.on_delete:
            forget(name)
        self.blobs.delete_tree(checkpoint.blob_key)
        return DeletedObject(id=name, object="model", deleted=True)

    def _checkpoint(self, organization: str, name: str) -> tuple[CheckpointRecord, str]:
        with self.database.transaction() as connection:
            found = checkpoint_rows.find_model(connection, name)
        if found is None or found[0].organization != organization:
            raise model_not_found(name)
        return found


def _to_wire(checkpoint: CheckpointRecord) -> Model:
    return Model(id=checkpoint.name, created=checkpoint.created_at, owned_by=checkpoint.organization)

"""`openft data check` for an uploaded file: the same report, for whoever may read the file (an
openft extension, `GET /v1/files/{file_id}/check`; the dashboard shows it before a job starts)."""

from __future__ import annotations

import threading

from openft.blobs import BlobStore
from openft.config import Settings
from openft.errors import NotFound
from openft.protocol.data_check import DataCheckReport, LineProblem, TokenDistribution
from openft.service.catalog import ModelCatalog
from openft.service.data_report import DataReport, check_training_file
from openft.service.files import FileService
from openft.service.models import BaseModelRegistry


class DataCheckService:
    def __init__(
        self,
        files: FileService,
        blobs: BlobStore,
        catalog: ModelCatalog,
        base_models: BaseModelRegistry,
        settings: Settings,
    ) -> None:
        self.files = files
        self.blobs = blobs
        self.catalog = catalog
        self.base_models = base_models
        self.settings = settings
        # One check at a time: the first one of a model measures its throughput with real training
        # steps, which two at once would both do (and slow each other's figure down).
        self._lock = threading.Lock()

    def check(
        self,
        organization: str,
        file_id: str,
        *,
        model: str | None,
        n_epochs: int | None,
        estimate: bool,
        validation: bool = False,
    ) -> DataCheckReport:
        """`model` is a base model, or a fine-tuned model or checkpoint the caller may use (its base
        model's tokenizer counts); by default the first base model."""
        record = self.files.get_record(organization, file_id)  # 404 for another organization's file
        name = model or self._default_model()
        base_model = self.catalog.resolve(organization, name).base_model
        with self._lock:
            report = check_training_file(
                self.blobs.local_file(record.blob_key),
                model=base_model,
                epochs=n_epochs,
                measure=estimate and not validation,  # training time is the training file's
                settings=self.settings,
                base_models=self.base_models,
                param="validation_file" if validation else "training_file",
            )
        return to_wire(report, file_id=file_id, filename=record.filename, model=name)

    def _default_model(self) -> str:
        models = self.base_models.list().data
        if not models:
            raise NotFound("No base model is configured to count tokens with.", param="model", code="model_not_found")
        return models[0].id


def to_wire(report: DataReport, *, file_id: str, filename: str, model: str) -> DataCheckReport:
    fields = report.as_dict()
    for key in ("file", "model", "errors"):
        fields.pop(key)
    for key in ("tokens", "preferred_tokens", "non_preferred_tokens"):
        if fields[key] is not None:
            fields[key] = TokenDistribution(**fields[key])
    errors = [LineProblem(line=error.line, code=error.code, message=error.message) for error in report.errors]
    return DataCheckReport(file_id=file_id, filename=filename, model=model, errors=errors, **fields)

"""The rules of openft: what the API may do with files, uploads, models and jobs."""

from __future__ import annotations

from dataclasses import dataclass

from openft.blobs import BlobStore, open_blob_store
from openft.config import Settings
from openft.service.catalog import ModelCatalog
from openft.service.chat import ChatService
from openft.service.data_check import DataCheckService
from openft.service.exports import ExportService
from openft.service.files import FileService
from openft.service.jobs import JobService
from openft.service.models import BaseModelRegistry
from openft.service.permissions import PermissionService
from openft.service.quotas import Quotas
from openft.service.uploads import UploadService
from openft.service.worker import Worker
from openft.store import Database


@dataclass
class Services:
    settings: Settings
    database: Database
    blobs: BlobStore
    files: FileService
    uploads: UploadService
    base_models: BaseModelRegistry
    jobs: JobService
    models: ModelCatalog
    permissions: PermissionService
    chat: ChatService
    exports: ExportService
    data_check: DataCheckService

    def new_worker(self) -> Worker:
        return Worker(self.settings, self.database, self.blobs, self.files, self.base_models)

    def close(self) -> None:
        self.chat.close()
        self.database.dispose()


def build_services(settings: Settings) -> Services:
    """Opens the database (migrated to head) and the blob store (the data directory's, or object storage)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.resolved_database_url)
    database.migrate()
    blobs = open_blob_store(settings)
    files = FileService(database, blobs, Quotas(settings))
    base_models = BaseModelRegistry(settings)
    catalog = ModelCatalog(database, blobs, base_models)
    return Services(
        settings=settings,
        database=database,
        blobs=blobs,
        files=files,
        uploads=UploadService(database, blobs, files, settings),
        base_models=base_models,
        jobs=JobService(database, files, base_models, catalog, settings),
        models=catalog,
        permissions=PermissionService(database, catalog, settings),
        chat=ChatService(catalog, base_models, settings),
        exports=ExportService(catalog, base_models, settings),
        data_check=DataCheckService(files, blobs, catalog, base_models, settings),
    )

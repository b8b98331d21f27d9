"""The Models API over base models: the embedded one and directories named in settings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types import Model

from tests.conftest import LiveServer, start_server

ODD_IDS = ["acme/tiny-llama", "tiny:v1.5"]


@pytest.fixture(scope="module")
def models_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp("hf-model")
    (directory / "config.json").write_text(json.dumps({"model_type": "llama"}))
    registered = ",".join(f"{model_id}={directory}" for model_id in ODD_IDS)
    broken = f"missing=/nonexistent/{directory.name}"
    live = start_server(tmp_path_factory.mktemp("models"), OPENFT_BASE_MODELS=f"{registered},{broken}")
    yield live
    live.stop()


def test_list_has_the_embedded_and_registered_models(models_server: LiveServer) -> None:
    listed = models_server.client().models.list()
    ids = [model.id for model in listed]
    assert ids == ["smollm2-135m-instruct", *ODD_IDS]
    assert all(model.object == "model" and model.owned_by == "system" and model.created > 0 for model in listed)


@pytest.mark.parametrize("model_id", ["smollm2-135m-instruct", *ODD_IDS])
def test_retrieve_ids_with_slash_colon_and_dot(models_server: LiveServer, model_id: str) -> None:
    assert models_server.client().models.retrieve(model_id).id == model_id


def test_raw_json_matches_the_sdk_types(models_server: LiveServer) -> None:
    with models_server.http() as http:
        listed = http.get("/models").json()
        assert set(listed) == {"object", "data"}
        for item in listed["data"]:
            Model.model_validate(item)
        Model.model_validate(http.get("/models/acme%2Ftiny-llama").json())


def test_unknown_model_is_404_model_not_found(models_server: LiveServer) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        models_server.client().models.retrieve("gpt-99")
    assert raised.value.code == "model_not_found"
    assert raised.value.body == {
        "message": "The model `gpt-99` does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


def test_a_directory_that_is_no_model_is_skipped_and_logged(models_server: LiveServer) -> None:
    assert "missing" not in [model.id for model in models_server.client().models.list()]
    assert "OPENFT_BASE_MODELS: missing=" in models_server.log()
    assert Path(models_server.data_dir).exists()

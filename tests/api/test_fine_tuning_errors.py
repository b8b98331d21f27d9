"""What `POST /v1/fine_tuning/jobs` refuses at once (400 with `param`), and data problems that end
a job `failed` with `error` set while it validates."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import TRAINING_ENV, LiveServer, chat_examples, start_server, wait_for_job


@pytest.fixture(scope="module")
def keyed_server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(
        tmp_path_factory.mktemp("jobs-errors"),
        **{**TRAINING_ENV, "OPENFT_API_KEYS": "sk-a:acme,sk-b:globex"},
        OPENFT_BASE_MODELS=f"tiny={tiny_dir}",
    )
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(keyed_server: LiveServer) -> openai.OpenAI:
    return keyed_server.client("sk-a")


@pytest.fixture(scope="module")
def training_file(client: openai.OpenAI) -> str:
    return client.files.create(file=("t.jsonl", chat_examples(10)), purpose="fine-tune").id


BAD_REQUESTS: list[tuple[dict[str, Any], str]] = [
    ({"model": "gpt-4o-mini"}, "model"),
    ({"training_file": "file-doesnotexist"}, "training_file"),
    ({"validation_file": "file-doesnotexist"}, "validation_file"),
    ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"n_epochs": 51}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"batch_size": 0}}, "hyperparameters.batch_size"),
    ({"hyperparameters": {"learning_rate_multiplier": 0}}, "hyperparameters.learning_rate_multiplier"),
    ({"hyperparameters": {"learning_rate_multiplier": -1.5}}, "hyperparameters.learning_rate_multiplier"),
    ({"hyperparameters": {"n_epochs": "many"}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"n_epochs": True}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"batch_size": False}}, "hyperparameters.batch_size"),
    (
        {"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 99}}}},
        "method.supervised.hyperparameters.n_epochs",
    ),
    ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 3}}}}, "method.dpo.hyperparameters.beta"),
    ({"method": {"type": "reinforcement"}}, "method.type"),
    ({"suffix": "x" * 65}, "suffix"),
    ({"suffix": "has spaces"}, "suffix"),
    ({"suffix": ""}, "suffix"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ({"metadata": {"k" * 65: "v"}}, "metadata"),
    ({"metadata": {"k": "v" * 513}}, "metadata"),
    ({"seed": -1}, "seed"),
]


@pytest.mark.parametrize(("override", "param"), BAD_REQUESTS)
def test_bad_requests_are_400_with_param(
    client: openai.OpenAI, training_file: str, override: dict[str, Any], param: str
) -> None:
    arguments = {"model": "tiny", "training_file": training_file, **override}
    with pytest.raises(openai.BadRequestError) as raised:
        client.fine_tuning.jobs.create(**arguments)
    assert raised.value.param == param
    assert raised.value.type == "invalid_request_error"
    assert raised.value.code
    assert client.fine_tuning.jobs.list().data == [] or all(
        job.training_file != training_file for job in client.fine_tuning.jobs.list()
    )


def test_files_of_the_wrong_purpose_or_organization_are_400(keyed_server: LiveServer, client: openai.OpenAI) -> None:
    other = keyed_server.client("sk-b")
    theirs = other.files.create(file=("t.jsonl", chat_examples(10)), purpose="fine-tune").id
    wrong_purpose = client.files.create(file=("t.jsonl", chat_examples(10)), purpose="user_data").id
    for file_id, code in ((theirs, "file_not_found"), (wrong_purpose, "invalid_file_purpose")):
        with pytest.raises(openai.BadRequestError) as raised:
            client.fine_tuning.jobs.create(model="tiny", training_file=file_id)
        assert (raised.value.param, raised.value.code) == ("training_file", code)


def test_unknown_fields_are_ignored(client: openai.OpenAI, training_file: str) -> None:
    # Integrations are echoed, and refused where W&B isn't configured: tests/service/test_wandb.py.
    job = client.fine_tuning.jobs.create(
        model="tiny", training_file=training_file, extra_body={"some_future_field": True}
    )
    assert job.integrations == []
    client.fine_tuning.jobs.cancel(job.id)


def test_other_organizations_jobs_are_404(keyed_server: LiveServer, client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(model="tiny", training_file=training_file, hyperparameters={"n_epochs": 1})
    other = keyed_server.client("sk-b")
    for call in (
        other.fine_tuning.jobs.retrieve,
        other.fine_tuning.jobs.cancel,
        other.fine_tuning.jobs.pause,
        other.fine_tuning.jobs.resume,
        other.fine_tuning.jobs.list_events,
        other.fine_tuning.jobs.checkpoints.list,
    ):
        with pytest.raises(openai.NotFoundError):
            call(job.id)
    assert job.id not in [j.id for j in other.fine_tuning.jobs.list()]
    client.fine_tuning.jobs.cancel(job.id)


def test_cancel_with_an_empty_json_body(keyed_server: LiveServer, client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(model="tiny", training_file=training_file)
    with keyed_server.http("sk-a") as http:
        response = http.post(f"/fine_tuning/jobs/{job.id}/cancel", headers={"content-type": "application/json"})
    assert response.status_code == 200 and response.json()["status"] == "cancelled"


def _lines(*objects: object) -> bytes:
    return "\n".join(json.dumps(item) for item in objects).encode() + b"\n"


GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
FAILING_FILES: list[tuple[bytes, str, str]] = [
    (
        _lines(*[GOOD] * 7),
        "invalid_n_examples",
        "Training file has 7 example(s), but must have at least 10 examples",
    ),
    (_lines(*[GOOD] * 4) + b"{not json\n" + _lines(*[GOOD] * 6), "invalid_training_file", "line 5"),
    (
        _lines(*[GOOD] * 9, {"messages": [{"role": "user", "content": "no answer"}]}),
        "invalid_training_file",
        "line 10",
    ),
    (_lines(*[GOOD] * 2, [1, 2], *[GOOD] * 8), "invalid_training_file", "line 3"),
    (_lines(*[GOOD] * 10, {"text": "what format is this"}), "invalid_training_file", "line 11"),
]


@pytest.mark.parametrize(("content", "code", "fragment"), FAILING_FILES)
def test_bad_training_data_fails_the_job_naming_the_line(
    client: openai.OpenAI, content: bytes, code: str, fragment: str
) -> None:
    file_id = client.files.create(file=("bad.jsonl", content), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model="tiny", training_file=file_id)
    failed = wait_for_job(client, job.id, ("failed", "succeeded"), timeout=60)
    assert failed.status == "failed"
    assert failed.error is not None
    assert (failed.error.code, failed.error.param) == (code, "training_file")
    assert fragment in failed.error.message
    assert failed.fine_tuned_model is None and failed.finished_at is not None
    latest = client.fine_tuning.jobs.list_events(job.id, limit=1).data[0]
    assert (latest.level, latest.message) == ("error", failed.error.message)


def test_bad_validation_file_names_validation_file(client: openai.OpenAI, training_file: str) -> None:
    bad = client.files.create(file=("v.jsonl", b'{"messages": "nope"}\n'), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model="tiny", training_file=training_file, validation_file=bad)
    failed = wait_for_job(client, job.id, ("failed", "succeeded"), timeout=60)
    assert failed.error is not None
    assert (failed.error.code, failed.error.param) == ("invalid_validation_file", "validation_file")
    assert "line 1" in failed.error.message

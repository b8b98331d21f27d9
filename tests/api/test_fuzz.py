"""Property-based fuzzing of every operation of the API from the live server's own OpenAPI
document, with schemathesis: parameters and bodies (JSON and multipart) that fit the document and
ones that break it. For every response: never a 5xx, and every error body is exactly OpenAI's
`{"error": {"message", "type", "param", "code"}}`; in an event stream, no error frame is a
`server_error`, and each is just as well formed. How to run it: docs/errors.md#fuzzing-the-api.

The budget is fixed: `OPENFT_FUZZ_MAX_EXAMPLES` cases per operation (default 40), derandomized so
that every run sends the same requests; `OPENFT_FUZZ_SEED` explores other ones. Nothing trains
(the server runs no worker) and nothing generates for long (the tiny model, at most 256 tokens
per request).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode

from tests.conftest import LiveServer, chat_examples, start_server

API_KEY = "sk-fuzz"
AUTHORIZATION = {"Authorization": f"Bearer {API_KEY}"}
MAX_EXAMPLES = int(os.environ.get("OPENFT_FUZZ_MAX_EXAMPLES", "40"))
SEED = os.environ.get("OPENFT_FUZZ_SEED")
REQUEST_TIMEOUT_S = 30.0
MODEL = "tiny"
FUZZ_ENV = {
    "OPENFT_API_KEYS": f"{API_KEY}:fuzzers",
    "OPENFT_EMBEDDED_WORKER": "false",  # a job the fuzzer manages to create stays validating_files
    "OPENFT_MAX_TOKENS_PER_REQUEST": "256",  # prompt + max_tokens, times n: the tiny model answers in ms
    "OPENFT_DEFAULT_MAX_TOKENS": "8",
    "OPENFT_MAX_COMPLETION_PROMPTS": "8",
}


class Statistics:
    """What the fuzzer sent and got back, printed when the module ends (`pytest -s` shows it)."""

    def __init__(self) -> None:
        self.started = self.finished = time.monotonic()
        self.statuses: Counter[int] = Counter()
        self.per_operation: Counter[str] = Counter()
        self.error_codes: Counter[str] = Counter()
        self.aimed = self.generations = self.streams = 0

    def summary(self) -> str:
        lines = [
            f"fuzzing: {sum(self.per_operation.values())} cases over {len(self.per_operation)} operations in "
            f"{self.finished - self.started:.1f} s; {self.aimed} aimed at real objects, {self.generations} "
            f"completions and {self.streams} streams generated",
            "statuses: " + ", ".join(f"{status}: {count}" for status, count in sorted(self.statuses.items())),
            "error codes: " + ", ".join(f"{code}: {count}" for code, count in self.error_codes.most_common()),
        ]
        lines += [f"  {count:4d}  {label}" for label, count in sorted(self.per_operation.items())]
        return "\n".join(lines)


STATISTICS = Statistics()


@pytest.fixture(scope="module")
def fuzz_server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("fuzz"), OPENFT_BASE_MODELS=f"{MODEL}={tiny_dir}", **FUZZ_ENV)
    yield live
    live.stop()
    print("\n" + STATISTICS.summary())


@pytest.fixture(scope="module")
def real_objects(fuzz_server: LiveServer) -> dict[str, str]:
    """Ids of objects that exist, which generated cases are sometimes pointed at: a random id is
    a 404 before any of the route's own logic runs."""
    client = fuzz_server.client(API_KEY)
    training = client.files.create(file=("train.jsonl", chat_examples(10)), purpose="fine-tune")
    other = client.files.create(file=("notes.txt", b"some notes\n"), purpose="user_data")
    upload = client.uploads.create(bytes=8, filename="u.jsonl", mime_type="application/jsonl", purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=training.id, model=MODEL, suffix="fuzz")
    return {
        "file_id": other.id,
        "training_file": training.id,
        "validation_file": training.id,
        "upload_id": upload.id,
        "job_id": job.id,
        "model_id": MODEL,
        "model": MODEL,
    }


@pytest.fixture(scope="module")
def api_schema(fuzz_server: LiveServer) -> schemathesis.BaseSchema:
    origin = fuzz_server.base_url.removesuffix("/v1")
    schema = schemathesis.openapi.from_url(f"{origin}/openapi.json", timeout=REQUEST_TIMEOUT_S)
    schema.config.update(base_url=origin, headers=AUTHORIZATION)
    return schema


FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=timedelta(seconds=REQUEST_TIMEOUT_S),
    derandomize=SEED is None,
    database=None,  # no .hypothesis directory, and no replays of old failures within a fixed budget
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
)
# What a positive case aimed at the real model chats with instead of its generated `messages` or
# `prompt` (which the validators refuse more often than not, so that nothing would be generated);
# half of them stream; the sampling parameters (n, max_tokens, stop, logprobs, ...) stay as generated.
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
MESSAGES = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "developer", "user", "assistant"]), "content": TEXT}),
    min_size=1,
    max_size=3,
)
PROMPTS = TEXT.filter(bool) | st.lists(TEXT.filter(bool), min_size=1, max_size=3)


# Each operation gets its own Hypothesis test built from `APIOperation.as_strategy` (schemathesis's
# documented strategies) rather than `schemathesis.pytest.from_fixture`, whose runner breaks on
# pytest 9.2 (it sets `Function._nodeid`, which pytest no longer has).
def test_no_server_errors_and_openai_shaped_errors(
    api_schema: schemathesis.BaseSchema, real_objects: dict[str, str]
) -> None:
    STATISTICS.started = time.monotonic()
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20, "the document lists fewer operations than the API has"
    # What deletes or cancels the real objects goes last, so that the others find them alive.
    operations.sort(key=lambda operation: operation.method == "delete" or operation.path.endswith("/cancel"))
    for operation in operations:
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE, headers=AUTHORIZATION),
            operation.as_strategy(GenerationMode.NEGATIVE, headers=AUTHORIZATION),
        )

        @given(case=cases, aim=st.booleans(), data=st.data())
        @FUZZ_SETTINGS
        def fuzz(case: Case, aim: bool, data: st.DataObject) -> None:
            if aim:
                _aim_at_real_objects(case, data, real_objects)
            check_one_case(case)

        if SEED is not None:
            fuzz = seed(int(SEED))(fuzz)
        try:
            fuzz()
        except Exception as failure:  # shrunk by Hypothesis; the message says how to reproduce it
            failures.append(f"{operation.label}: {_describe(failure)}")
        finally:
            STATISTICS.finished = time.monotonic()
    assert not failures, "\n\n".join(failures)


def check_one_case(case: Case) -> None:
    response = case.call(headers=AUTHORIZATION, timeout=REQUEST_TIMEOUT_S)
    STATISTICS.per_operation[case.operation.label] += 1
    STATISTICS.statuses[response.status_code] += 1
    reproduce = f"\nReproduce with: {case.as_curl_command(headers=AUTHORIZATION)}"
    assert response.status_code < 500, f"{response.status_code}: {response.content[:500]!r}{reproduce}"
    if response.status_code >= 400:
        error = _openai_error(response.content, reproduce)
        STATISTICS.error_codes[str(error["code"])] += 1
    elif response.headers.get("content-type", [""])[0].startswith("text/event-stream"):
        STATISTICS.streams += 1
        for frame in response.content.decode().split("\n\n"):
            payload = frame.removeprefix("data: ")
            if payload.startswith("{") and '"error"' in payload:
                error = _openai_error(payload.encode(), reproduce)
                assert error["type"] != "server_error", f"a stream failed: {payload}{reproduce}"
    elif case.operation.path.endswith("completions"):
        STATISTICS.generations += 1


def _aim_at_real_objects(case: Case, data: st.DataObject, real_objects: dict[str, str]) -> None:
    """Replaces generated ids (path parameters, and `model` / `training_file` / ... in a JSON body)
    with ones that exist, and a chat's messages or a completion's prompt with ones that pass
    validation; the other generated values stay as they were."""
    aimed = False
    for name in list(case.path_parameters or {}):
        if name in real_objects:
            case.path_parameters[name] = real_objects[name]
            aimed = True
    if isinstance(case.body, dict):
        for name in ("model", "training_file", "validation_file"):
            if name in case.body:
                case.body[name] = real_objects[name]
                aimed = True
        if "messages" in case.body:
            case.body["messages"] = data.draw(MESSAGES)
        if "prompt" in case.body:
            case.body["prompt"] = data.draw(PROMPTS)
        if "messages" in case.body or "prompt" in case.body:
            case.body["stream"] = data.draw(st.booleans())
    STATISTICS.aimed += aimed


def _describe(failure: BaseException) -> str:
    notes = "\n".join(getattr(failure, "__notes__", []))
    text = f"{type(failure).__name__}: {failure}\n{notes}"
    if isinstance(failure, BaseExceptionGroup):  # Hypothesis found several distinct failures
        text += "\n".join(_describe(inner) for inner in failure.exceptions)
    return text


def _openai_error(content: bytes, reproduce: str) -> dict[str, Any]:
    """Asserts that `content` is exactly an OpenAI error body and returns its `error`."""
    try:
        body = json.loads(content)
    except ValueError:
        raise AssertionError(f"an error body that is not JSON: {content[:500]!r}{reproduce}") from None
    assert isinstance(body, dict), f"not an object: {body!r}{reproduce}"
    assert set(body) == {"error"}, f"not {{'error': …}}: {body!r}{reproduce}"
    error = body["error"]
    assert isinstance(error, dict), f"error is not an object: {body!r}{reproduce}"
    assert set(error) == {"message", "type", "param", "code"}, f"wrong keys: {body!r}{reproduce}"
    assert isinstance(error["message"], str) and error["message"], f"message: {body!r}{reproduce}"
    assert isinstance(error["type"], str) and error["type"], f"type: {body!r}{reproduce}"
    assert error["param"] is None or isinstance(error["param"], str), f"param: {body!r}{reproduce}"
    assert error["code"] is None or isinstance(error["code"], str), f"code: {body!r}{reproduce}"
    return error


def test_the_document_describes_every_route(fuzz_server: LiveServer) -> None:
    """Bodies read by hand (multipart forms) are described too, and no operation promises
    FastAPI's 422 shape: errors are OpenAI's, every one."""
    document = httpx.get(fuzz_server.base_url.removesuffix("/v1") + "/openapi.json").json()
    operations = {
        f"{method.upper()} {path}": operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    for label in ("POST /v1/files", "POST /v1/uploads/{upload_id}/parts"):
        form = operations[label]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert form["required"], label
    for label, operation in operations.items():
        assert "422" not in operation["responses"], label
        error_schema = operation["responses"]["default"]["content"]["application/json"]["schema"]
        assert error_schema == {"$ref": "#/components/schemas/ErrorResponse"}, label
    detail = document["components"]["schemas"]["ErrorDetail"]
    assert detail["required"] == ["message", "type", "param", "code"]


def test_methods_a_route_lacks_are_openai_errors(fuzz_server: LiveServer) -> None:
    document = httpx.get(fuzz_server.base_url.removesuffix("/v1") + "/openapi.json").json()
    with fuzz_server.http(API_KEY) as http:
        for path, item in document["paths"].items():
            concrete = path.replace("{", "").replace("}", "").removeprefix("/v1")
            for method in {"GET", "POST", "PUT", "PATCH", "DELETE"} - {method.upper() for method in item}:
                response = http.request(method, concrete)
                assert response.status_code in (404, 405), (method, path, response.status_code)
                _openai_error(response.content, f" ({method} {path})")

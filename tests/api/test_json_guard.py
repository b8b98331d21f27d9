"""JSON bodies with lone surrogates get a 400 and store nothing; oversized JSON bodies get a 413.
Raw HTTP, as a client would send them (the SDKs can't encode a lone surrogate themselves)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import LiveServer, start_server


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("guard"), OPENFT_MAX_JSON_BODY_BYTES="100000")
    yield live
    live.stop()


LONE = '"\\udfff"'  # JSON text of a string holding a lone low surrogate


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/fine_tuning/jobs", '{"model": "tiny", "training_file": "file-x", "metadata": {"k": ' + LONE + "}}"),
        ("/fine_tuning/jobs", '{"model": "\\ud800", "training_file": "file-x"}'),
        ("/chat/completions", '{"model": ' + LONE + ', "messages": [{"role": "user", "content": "hi"}]}'),
        ("/completions", '{"model": "tiny", "prompt": "\\ud800 and more"}'),
        ("/uploads", '{"filename": ' + LONE + ', "purpose": "fine-tune", "bytes": 1, "mime_type": "text/plain"}'),
    ],
)
def test_lone_surrogates_are_400_and_store_nothing(guarded: LiveServer, path: str, body: str) -> None:
    with guarded.http() as http:
        response = http.post(path, content=body.encode(), headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "invalid_unicode"
        assert response.headers["x-request-id"].startswith("req_")
        jobs = http.get("/fine_tuning/jobs")
        assert jobs.status_code == 200 and jobs.json()["data"] == []


def test_escaped_pairs_and_escaped_backslashes_pass(guarded: LiveServer) -> None:
    body = '{"model": "nope \\ud83d\\ude00 \\\\udfff", "messages": [{"role": "user", "content": "hi"}]}'
    with guarded.http() as http:
        response = http.post("/chat/completions", content=body.encode(), headers={"content-type": "application/json"})
    assert response.status_code == 404  # a valid string: the model just doesn't exist
    assert response.json()["error"]["code"] == "model_not_found"


def test_oversized_json_is_413(guarded: LiveServer) -> None:
    body = '{"model": "tiny", "prompt": "' + "a" * 200_000 + '"}'
    with guarded.http() as http:
        response = http.post("/completions", content=body.encode(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "\xff", "messages": []}',  # not UTF-8 (FastAPI: a vague 400 "http_error")
        b"[" * 5000 + b"]" * 5000,  # deeper than the parser's recursion limit (FastAPI: the same)
        b"[" * 5000 + b'"\\u0041"' + b"]" * 5000,  # the same with an escape (the surrogate check: a 500)
        b'{"model": "tiny", "messages": ' + b"[" * 200 + b"]" * 200 + b"}",  # over MAX_JSON_DEPTH
    ],
    ids=["not-utf8", "deep", "deep-with-escape", "deeper-than-128"],
)
def test_undecodable_and_too_deep_json_is_invalid_json(guarded: LiveServer, body: bytes) -> None:
    with guarded.http() as http:
        response = http.post("/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_json"


def test_surrogates_encoded_as_bytes_are_invalid_unicode(guarded: LiveServer) -> None:
    body = b'{"model": "a\xed\xa0\x80", "messages": [{"role": "user", "content": "hi"}]}'
    with guarded.http() as http:
        response = http.post("/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_unicode"


def test_json_subtypes_are_guarded_too(guarded: LiveServer) -> None:
    """FastAPI parses `application/…+json` as JSON, so the guard reads those as well."""
    headers = {"content-type": "application/merge-patch+json"}
    with guarded.http() as http:
        body = b'{"model": "tiny", "prompt": ' + LONE.encode() + b"}"
        lone = http.post("/completions", content=body, headers=headers)
        large = http.post("/completions", content=b'{"prompt": "' + b"a" * 200_000 + b'"}', headers=headers)
    assert lone.status_code == 400 and lone.json()["error"]["code"] == "invalid_unicode"
    assert large.status_code == 413 and large.json()["error"]["code"] == "request_too_large"

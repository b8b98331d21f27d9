"""Per-organization quotas through the official SDK: jobs per hour, active jobs, files and Uploads
per hour; 429 with retry-after and x-ratelimit-* headers, and other organizations unaffected. The
same headers on every successful creation, and the stored-bytes quota (400)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest

from tests.conftest import LiveServer, chat_examples, start_server


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(
        tmp_path_factory.mktemp("quotas"),
        OPENFT_API_KEYS="sk-a:org-a,sk-b:org-b,sk-c:org-c,sk-d:org-d",
        OPENFT_EMBEDDED_WORKER="false",  # jobs stay validating: active
        OPENFT_JOBS_PER_HOUR="3",
        OPENFT_MAX_ACTIVE_JOBS="2",
        OPENFT_UPLOADS_PER_HOUR="3",
        OPENFT_MAX_STORED_BYTES="10000",
    )
    yield live
    live.stop()


def a_job(client: openai.OpenAI, file_id: str) -> str:
    return client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=file_id).id


def test_active_jobs_and_jobs_per_hour(limited: LiveServer) -> None:
    a, b = limited.client("sk-a"), limited.client("sk-b")
    file_id = a.files.create(file=("t.jsonl", chat_examples(10)), purpose="fine-tune").id
    first, _second = a_job(a, file_id), a_job(a, file_id)
    with pytest.raises(openai.RateLimitError) as active:
        a_job(a, file_id)
    assert active.value.code == "rate_limit_exceeded" and "at once (2)" in active.value.message
    assert active.value.response.headers["retry-after"] == "60"
    assert active.value.response.headers["x-ratelimit-limit-requests"] == "2"

    b_file = b.files.create(file=("t.jsonl", chat_examples(10)), purpose="fine-tune").id
    assert a_job(b, b_file)  # another organization's limits are its own

    a.fine_tuning.jobs.cancel(first)
    a_job(a, file_id)  # the third of the hour, now that one is no longer active
    a.fine_tuning.jobs.cancel(_second)
    with pytest.raises(openai.RateLimitError) as hourly:
        a_job(a, file_id)
    headers = hourly.value.response.headers
    assert "3 fine-tuning jobs per hour" in hourly.value.message
    assert 3500 < int(headers["retry-after"]) <= 3600 and headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == f"{headers['retry-after']}s"


def test_files_and_uploads_per_hour(limited: LiveServer) -> None:
    a = limited.client("sk-a")  # one file already this hour (the test above)
    a.files.create(file=("t.jsonl", b"{}\n"), purpose="fine-tune")
    a.uploads.create(bytes=1, filename="u", mime_type="text/plain", purpose="fine-tune")
    with pytest.raises(openai.RateLimitError) as file_over:
        a.files.create(file=("t.jsonl", b"{}\n"), purpose="fine-tune")
    assert "3 files and Uploads per hour" in file_over.value.message
    with pytest.raises(openai.RateLimitError):
        a.uploads.create(bytes=1, filename="u", mime_type="text/plain", purpose="fine-tune")
    assert len(a.files.list().data) == 2  # nothing of the refused ones was kept


def requests_headers(headers: Mapping[str, str]) -> tuple[str, str, str]:
    """x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests"""
    return (
        headers["x-ratelimit-limit-requests"],
        headers["x-ratelimit-remaining-requests"],
        headers["x-ratelimit-reset-requests"],
    )


def bytes_headers(headers: Mapping[str, str]) -> tuple[str, str]:
    return headers["x-ratelimit-limit-bytes"], headers["x-ratelimit-remaining-bytes"]


def seconds(reset: str) -> int:
    assert reset.endswith("s")
    return int(reset[:-1])


def test_successful_creations_say_what_is_left(limited: LiveServer) -> None:
    c = limited.client("sk-c")
    data = chat_examples(10)
    created = c.files.with_raw_response.create(file=("t.jsonl", data), purpose="fine-tune")
    file_id = created.parse().id
    limit, remaining, reset = requests_headers(created.headers)
    assert (limit, remaining) == ("3", "2") and 3590 <= seconds(reset) <= 3600
    assert bytes_headers(created.headers) == ("10000", str(10000 - len(data)))

    # Jobs: 3 per hour, 2 at once. The at-once limit is the closer to refusing, and says what its 429 says.
    job = c.fine_tuning.jobs.with_raw_response.create(model="smollm2-135m-instruct", training_file=file_id)
    assert requests_headers(job.headers) == ("2", "1", "60s") and "x-ratelimit-limit-bytes" not in job.headers
    second = c.fine_tuning.jobs.with_raw_response.create(model="smollm2-135m-instruct", training_file=file_id)
    assert requests_headers(second.headers) == ("2", "0", "60s")
    with pytest.raises(openai.RateLimitError) as active:
        a_job(c, file_id)
    assert requests_headers(active.value.response.headers) == ("2", "0", "60s")
    for finished in (job.parse().id, second.parse().id):
        c.fine_tuning.jobs.cancel(finished)
    third = c.fine_tuning.jobs.with_raw_response.create(model="smollm2-135m-instruct", training_file=file_id)
    limit, remaining, reset = requests_headers(third.headers)  # now the hourly one: 3 of 3
    assert (limit, remaining) == ("3", "0") and 3590 <= seconds(reset) <= 3600
    with pytest.raises(openai.RateLimitError) as hourly:
        a_job(c, file_id)
    refused = hourly.value.response.headers
    assert (
        requests_headers(refused)[:2] == ("3", "0") and abs(seconds(requests_headers(refused)[2]) - seconds(reset)) <= 1
    )
    assert refused["retry-after"] == str(seconds(requests_headers(refused)[2]))

    upload = c.uploads.with_raw_response.create(bytes=100, filename="u", mime_type="text/plain", purpose="fine-tune")
    assert requests_headers(upload.headers)[:2] == ("3", "1")
    assert bytes_headers(upload.headers) == ("10000", str(10000 - len(data) - 100))
    listed = c.files.with_raw_response.list()  # not counted by a quota: no headers
    assert not [name for name in listed.headers if name.startswith("x-ratelimit-")]


def post_file_headers_only(
    live: LiveServer, api_key: str, content_length: int
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Sends a POST /v1/files head announcing `content_length` bytes, and none of them."""
    url = urlsplit(live.base_url)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=20)
    try:
        connection.putrequest("POST", f"{url.path}/files")
        connection.putheader("Authorization", f"Bearer {api_key}")
        connection.putheader("Content-Type", "multipart/form-data; boundary=B")
        connection.putheader("Content-Length", str(content_length))
        connection.endheaders()
        response = connection.getresponse()  # a server that waited for the body would time out here
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(response.read())
    finally:
        connection.close()


def test_stored_bytes_limit(limited: LiveServer) -> None:
    d = limited.client("sk-d")
    pending = d.uploads.create(bytes=6000, filename="u", mime_type="text/plain", purpose="fine-tune")
    blobs_before = sorted(limited.data_dir.joinpath("blobs").rglob("*"))

    with pytest.raises(openai.BadRequestError) as over_upload:  # on its declared bytes
        d.uploads.create(bytes=4001, filename="u", mime_type="text/plain", purpose="fine-tune")
    refused = over_upload.value
    assert (refused.code, refused.param, refused.type) == ("storage_quota_exceeded", "bytes", "invalid_request_error")
    assert "exceeded your file storage quota" in refused.message and "holds 6000" in refused.message
    assert bytes_headers(refused.response.headers) == ("10000", "4000")
    assert "retry-after" not in refused.response.headers  # waiting doesn't help: the SDKs don't retry a 400

    with pytest.raises(openai.BadRequestError) as over_file:  # stopped while streaming, past the 4000 left
        d.files.create(file=("big.jsonl", b"x" * 5000), purpose="fine-tune")
    assert (over_file.value.code, over_file.value.param) == ("storage_quota_exceeded", "file")
    assert "more than 4000 bytes" in over_file.value.message
    assert bytes_headers(over_file.value.response.headers) == ("10000", "4000")

    status, headers, body = post_file_headers_only(limited, "sk-d", 3 * 1024 * 1024)  # refused on Content-Length
    assert status == 400 and body["error"]["code"] == "storage_quota_exceeded"
    assert bytes_headers(headers) == ("10000", "4000")
    assert d.files.list().data == [] and sorted(limited.data_dir.joinpath("blobs").rglob("*")) == blobs_before

    d.uploads.cancel(pending.id)  # a cancelled Upload holds nothing
    fits = d.files.with_raw_response.create(file=("big.jsonl", b"x" * 5000), purpose="fine-tune")
    assert bytes_headers(fits.headers) == ("10000", "5000")
    assert requests_headers(fits.headers)[:2] == ("3", "1")  # the refused ones weren't counted
    d.files.delete(fits.parse().id)  # nor does a deleted file
    bigger = d.files.with_raw_response.create(file=("big.jsonl", b"x" * 9000), purpose="fine-tune")
    assert bytes_headers(bigger.headers) == ("10000", "1000")

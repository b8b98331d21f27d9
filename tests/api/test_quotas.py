"""Per-organization quotas through the official SDK: jobs per hour, active jobs, files and Uploads
per hour; 429 with retry-after and x-ratelimit-* headers, and other organizations unaffected."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.conftest import LiveServer, chat_examples, start_server


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(
        tmp_path_factory.mktemp("quotas"),
        OPENFT_API_KEYS="sk-a:org-a,sk-b:org-b",
        OPENFT_EMBEDDED_WORKER="false",  # jobs stay validating: active
        OPENFT_JOBS_PER_HOUR="3",
        OPENFT_MAX_ACTIVE_JOBS="2",
        OPENFT_UPLOADS_PER_HOUR="3",
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

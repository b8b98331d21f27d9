"""The API on PostgreSQL: a live `openft serve` whose OPENFT_DATABASE_URL is a PostgreSQL schema
of this run (tests/postgres.py), driven by the official SDK through what matters most: files
(upload, list, paging, delete), Uploads, jobs (create, metadata filters, list, events, cancel),
one tiny training job through to `succeeded` and a chat with the model it made. The store tests
(tests/store) check the queries on both backends; these check that the service runs on one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import select

from openft.store import Database
from openft.store.schema import workers
from tests.conftest import TRAINING_ENV, LiveServer, chat_examples, start_server, wait_for_job, wait_until


@pytest.fixture(scope="module")
def database_url(postgres: Any) -> str:
    return str(postgres.new_schema())


@pytest.fixture(scope="module")
def pg_server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[LiveServer]:
    live = start_server(
        tmp_path_factory.mktemp("postgres"),
        OPENFT_DATABASE_URL=database_url,
        OPENFT_BASE_MODELS=f"tiny={tiny_dir}",
        OPENFT_MAX_SEQ_LEN="64",
        **TRAINING_ENV,
    )
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(pg_server: LiveServer) -> openai.OpenAI:
    return pg_server.client()


def test_the_database_is_postgresql_and_the_worker_is_registered(pg_server: LiveServer, database_url: str) -> None:
    assert not (pg_server.data_dir / "openft.db").exists()  # no SQLite file beside it
    database = Database(database_url)
    try:
        with database.transaction() as connection:
            rows = connection.execute(select(workers.c.id, workers.c.capabilities)).all()
    finally:
        database.dispose()
    assert len(rows) == 1  # the embedded worker, with what it can run
    assert rows[0].capabilities["device"] in ("cpu", "cuda") and rows[0].capabilities["memory_bytes"] > 0


def test_files_upload_list_page_and_delete(client: openai.OpenAI) -> None:
    created = [
        client.files.create(file=(f"f{n}.jsonl", chat_examples(1, offset=n)), purpose="fine-tune") for n in range(5)
    ]
    ids = [file.id for file in created]
    newest_first = [file.id for file in client.files.list(limit=2, order="desc") if file.id in ids]  # SDK pages
    assert newest_first == ids[::-1]
    page = client.files.list(limit=2, order="asc", after=ids[0])
    assert [file.id for file in page.data] == ids[1:3] and page.has_more
    assert client.files.retrieve(ids[2]).filename == "f2.jsonl"
    assert client.files.content(ids[3]).content == chat_examples(1, offset=3)
    assert client.files.delete(ids[4]).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(ids[4])


def test_an_upload_in_parts(client: openai.OpenAI) -> None:
    data = chat_examples(20)
    upload = client.uploads.create(bytes=len(data), filename="big.jsonl", mime_type="text/jsonl", purpose="fine-tune")
    half = len(data) // 2
    parts = [client.uploads.parts.create(upload.id, data=chunk) for chunk in (data[:half], data[half:])]
    completed = client.uploads.complete(upload.id, part_ids=[part.id for part in parts])
    assert completed.status == "completed" and completed.file is not None
    assert client.files.content(completed.file.id).content == data


def test_jobs_metadata_events_and_cancel(client: openai.OpenAI) -> None:
    file_id = client.files.create(file=("t.jsonl", chat_examples(10)), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=file_id,
        hyperparameters={"n_epochs": 50},  # long enough to cancel while it runs
        metadata={"team": "pg", 'odd "key"': "v"},
    )
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "pg"})] == [job.id]
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={'odd "key"': "v"})] == [job.id]
    assert client.fine_tuning.jobs.list(metadata={"team": "other"}).data == []
    for key in ['team" OR 1=1--', "$.team", "team'"]:
        assert client.fine_tuning.jobs.list(metadata={key: "pg"}).data == []
    wait_until(lambda: client.fine_tuning.jobs.retrieve(job.id).status == "running", timeout=120, what="the job to run")
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    assert wait_for_job(client, job.id, ("cancelled",)).status == "cancelled"
    messages = [event.message for event in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert messages[-1] == f"Created fine-tuning job: {job.id}" and "Fine-tuning job started" in messages


def test_a_job_trains_to_succeeded_and_its_model_answers(client: openai.OpenAI) -> None:
    file_id = client.files.create(file=("t.jsonl", chat_examples(10)), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model="tiny", training_file=file_id, suffix="pg", hyperparameters={"n_epochs": 1, "batch_size": 5}
    )
    job = wait_for_job(client, job.id, ("succeeded", "failed", "cancelled"))
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model is not None and job.trained_tokens
    metrics = [event for event in client.fine_tuning.jobs.list_events(job.id, limit=100) if event.type == "metrics"]
    assert sorted(event.data["step"] for event in metrics) == [1, 2]  # type: ignore[index]
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints and checkpoints[0].fine_tuned_model_checkpoint == job.fine_tuned_model
    assert job.fine_tuned_model in [model.id for model in client.models.list()]
    reply = client.chat.completions.create(
        model=job.fine_tuned_model, messages=[{"role": "user", "content": "What is 2 plus 2?"}], max_tokens=4
    )
    assert reply.choices[0].message.content is not None


def test_a_nul_character_is_a_400_not_a_500(pg_server: LiveServer, client: openai.OpenAI) -> None:
    """PostgreSQL's text can't hold U+0000; wherever it arrives it is refused as a bad request."""
    file_id = client.files.create(file=("t.jsonl", chat_examples(10)), purpose="fine-tune").id
    with pg_server.http() as http:
        job = {"model": "tiny", "training_file": file_id, "metadata": {"k": "a\u0000b"}}
        assert http.post("/fine_tuning/jobs", json=job).status_code == 400
        assert http.get("/files", params={"after": "file-\x00"}).status_code == 400
        assert http.get("/fine_tuning/jobs/ftjob-%00").status_code == 400
        assert http.get("/fine_tuning/jobs", params={"metadata[k]": "a\x00b"}).status_code == 400

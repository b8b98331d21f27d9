"""The service with its bytes in S3-compatible object storage (OPENFT_BLOB_URL=s3://..., here
SeaweedFS): files and Uploads stream in and out, a job trains and publishes its checkpoints to the
bucket, the server chats with the model from its cache, and deleted files leave the bucket."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import TRAINING_ENV, LiveServer, chat_examples, start_server, wait_for_job

PART_BYTES = 5 * 1024 * 1024
PREFIX = "api"


@pytest.fixture(scope="module")
def s3_server(seaweedfs: Any, tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(
        tmp_path_factory.mktemp("s3-server"),
        OPENFT_BASE_MODELS=f"tiny={tiny_dir}",
        OPENFT_MAX_SEQ_LEN="64",
        OPENFT_BLOB_PART_BYTES=str(PART_BYTES),
        **TRAINING_ENV,
        **seaweedfs.env(PREFIX),
    )
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(s3_server: LiveServer) -> openai.OpenAI:
    return s3_server.client()


def test_files_and_uploads_round_trip_through_the_bucket(
    client: openai.OpenAI, s3_server: LiveServer, seaweedfs: Any
) -> None:
    content = chat_examples(55_000)  # several parts: a multipart upload as it streams in
    assert len(content) > 2 * PART_BYTES
    created = client.files.create(file=("big.jsonl", content), purpose="fine-tune")
    assert f"files/{created.id}" in seaweedfs.keys(PREFIX)
    assert client.files.content(created.id).content == content

    pieces = [content[: PART_BYTES + 1], content[PART_BYTES + 1 : PART_BYTES + 1000], content[PART_BYTES + 1000 :]]
    upload = client.uploads.create(
        bytes=len(content), filename="parts.jsonl", mime_type="text/jsonl", purpose="fine-tune"
    )
    parts = [client.uploads.parts.create(upload.id, data=piece).id for piece in pieces]
    assert len([key for key in seaweedfs.keys(PREFIX) if key.startswith(f"uploads/{upload.id}/")]) == 3
    completed = client.uploads.complete(upload.id, part_ids=parts, md5=hashlib.md5(content).hexdigest())
    assert completed.file is not None and client.files.content(completed.file.id).content == content
    assert not [key for key in seaweedfs.keys(PREFIX) if key.startswith("uploads/")]  # the parts are gone

    for file_id in (created.id, completed.file.id):
        assert client.files.delete(file_id).deleted
        assert f"files/{file_id}" not in seaweedfs.keys(PREFIX)
    assert seaweedfs.pending_multipart_uploads(PREFIX) == []
    assert not (s3_server.data_dir / "blobs").exists()  # nothing of it on the server's disk


def test_a_job_publishes_to_the_bucket_and_its_model_answers(
    client: openai.OpenAI, s3_server: LiveServer, seaweedfs: Any
) -> None:
    training_file = client.files.create(file=("t.jsonl", chat_examples(10)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=training_file.id,
        suffix="bucket",
        seed=3,
        hyperparameters={"n_epochs": 2, "batch_size": 5, "learning_rate_multiplier": 50},
    )
    job = wait_for_job(client, job.id, ("succeeded", "failed", "cancelled"))
    assert job.status == "succeeded", job.error

    keys = seaweedfs.keys(PREFIX)
    checkpoints = {key.split("/")[3] for key in keys if key.startswith(f"jobs/{job.id}/checkpoints/")}
    assert len(checkpoints) == 2 and all(name.startswith("step-") for name in checkpoints)
    assert f"jobs/{job.id}/resume.pt" in keys and f"files/{job.result_files[0]}" in keys
    assert client.files.content(job.result_files[0]).content  # the step metrics, from the bucket
    work = s3_server.data_dir / "work" / "jobs" / job.id
    assert not [path for path in work.rglob("*") if path.is_file()]  # all of it published

    answer = client.chat.completions.create(
        model=job.fine_tuned_model, messages=[{"role": "user", "content": "What is 3 plus 3?"}], max_tokens=8
    )
    assert answer.choices[0].message.content is not None
    cached = s3_server.data_dir / "cache" / "blobs" / "jobs" / job.id / "checkpoints"
    assert [path.name for path in cached.iterdir()] == [max(checkpoints, key=lambda name: int(name.split("-")[1]))]

    assert client.files.delete(training_file.id).deleted
    assert f"files/{training_file.id}" not in seaweedfs.keys(PREFIX)

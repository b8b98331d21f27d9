"""Fine-tuning jobs end to end through the official SDK, training the tiny model for real."""

from __future__ import annotations

import base64
import csv
import io
import json

import openai
import pytest
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

from tests.conftest import LiveServer, chat_examples, wait_for_job, wait_until

pytestmark = pytest.mark.usefixtures("training_server")


@pytest.fixture(scope="module")
def client(training_server: LiveServer) -> openai.OpenAI:
    return training_server.client()


@pytest.fixture(scope="module")
def training_file(client: openai.OpenAI) -> str:
    return client.files.create(file=("train.jsonl", chat_examples(12)), purpose="fine-tune").id


def test_seed_workflow_to_succeeded(client: openai.OpenAI, training_server: LiveServer, training_file: str) -> None:
    validation = client.files.create(file=("valid.jsonl", chat_examples(3, offset=50)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        training_file=training_file,
        validation_file=validation.id,
        model="tiny",
        suffix="my-custom-model",
        hyperparameters={"n_epochs": 4, "batch_size": 3, "learning_rate_multiplier": 2},
        metadata={"team": "seed"},
    )
    assert job.id.startswith("ftjob-") and job.object == "fine_tuning.job"
    assert job.status == "validating_files"
    assert 0 <= job.seed <= 2_147_483_647
    assert job.model == "tiny" and job.organization_id == "org-personal"
    assert job.fine_tuned_model is None and job.finished_at is None and job.result_files == []
    assert job.error is None and job.trained_tokens is None

    job = wait_for_job(client, job.id, ("succeeded", "failed", "cancelled"))
    assert job.status == "succeeded", job.error
    total_steps = 4 * 4  # ceil(12 / 3) steps per epoch
    assert job.hyperparameters.n_epochs == 4 and job.hyperparameters.batch_size == 3
    assert job.method is not None and job.method.supervised is not None
    assert job.method.supervised.hyperparameters.model_dump() == job.hyperparameters.model_dump()
    assert job.fine_tuned_model is not None
    prefix, base, org, suffix, model_id = job.fine_tuned_model.split(":")
    assert (prefix, base, org, suffix, len(model_id)) == ("ft", "tiny", "personal", "my-custom-model", 8)
    assert job.finished_at is not None and job.finished_at >= job.created_at
    assert job.trained_tokens and job.trained_tokens > 0
    assert job.metadata == {"team": "seed"}

    # Events, newest first, paginated by the SDK with a small page size.
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=4))
    assert len({event.id for event in events}) == len(events)
    messages = [event.message for event in reversed(events)]
    assert messages[:5] == [
        f"Created fine-tuning job: {job.id}",
        f"Validating training file: {training_file} and validation file: {validation.id}",
        messages[2],
        "Files validated, moving job to queued state",
        "Fine-tuning job started",
    ]
    assert messages[2].startswith("Training file has 12 examples and ")
    assert messages[-2:] == [
        f"New fine-tuned model created: {job.fine_tuned_model}",
        "The job has successfully completed",
    ]
    metrics = [event for event in reversed(events) if event.type == "metrics"]
    assert [event.data["step"] for event in metrics] == list(range(1, total_steps + 1))  # type: ignore[index]
    assert metrics[0].message.startswith(f"Step 1/{total_steps}: training loss=")
    assert set(metrics[0].data) >= {"step", "train_loss", "train_mean_token_accuracy", "total_steps"}  # type: ignore[arg-type]
    assert any("valid_loss" in (event.data or {}) for event in metrics)
    assert "full validation loss=" in metrics[-1].message
    started = next(event for event in events if event.message == "Fine-tuning job started")
    assert started.data is None

    # One checkpoint per epoch, the last 3 kept, newest first; the final one is the model itself.
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id, limit=2))
    assert [c.step_number for c in checkpoints] == [16, 12, 8]
    assert checkpoints[0].fine_tuned_model_checkpoint == job.fine_tuned_model
    for checkpoint in checkpoints[1:]:
        name = checkpoint.fine_tuned_model_checkpoint
        assert name.startswith("ft:tiny:personal:my-custom-model:") and name.endswith(
            f":ckpt-step-{checkpoint.step_number}"
        )
        assert f"Checkpoint created at step {checkpoint.step_number} with Snapshot ID: {name}" in messages
    assert all(c.id.startswith("ftckpt_") and c.fine_tuning_job_id == job.id for c in checkpoints)
    assert checkpoints[0].metrics.full_valid_loss is not None

    # The result file: step_metrics.csv, served base64-encoded as OpenAI does.
    result = client.files.retrieve(job.result_files[0])
    assert (result.filename, result.purpose) == ("step_metrics.csv", "fine-tune-results")
    rows = list(csv.reader(io.StringIO(base64.b64decode(client.files.content(result.id).content).decode())))
    assert rows[0] == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert [int(row[0]) for row in rows[1:]] == list(range(1, total_steps + 1))

    listed = client.fine_tuning.jobs.list(limit=10)
    assert job.id in [j.id for j in listed]
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "seed"})] == [job.id]
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "other"})] == []
    # Keys are bound, not spliced into a JSON path: quotes and SQL find nothing and break nothing.
    for key in ['team" OR 1=1--', 'te"am', "team'", "$.team"]:
        assert client.fine_tuning.jobs.list(metadata={key: "seed"}).data == []

    with training_server.http() as http:
        FineTuningJob.model_validate(http.get(f"/fine_tuning/jobs/{job.id}").json())
        for event in http.get(f"/fine_tuning/jobs/{job.id}/events", params={"limit": 100}).json()["data"]:
            FineTuningJobEvent.model_validate(event)
        page = http.get(f"/fine_tuning/jobs/{job.id}/checkpoints").json()
        assert set(page) == {"object", "data", "first_id", "last_id", "has_more"}
        for checkpoint in page["data"]:
            FineTuningJobCheckpoint.model_validate(checkpoint)
        assert set(http.get("/fine_tuning/jobs").json()) == {"object", "data", "has_more"}

    with pytest.raises(openai.BadRequestError) as raised:
        client.fine_tuning.jobs.cancel(job.id)
    assert raised.value.code == "invalid_state"


def test_same_seed_and_data_give_the_same_losses(client: openai.OpenAI, training_file: str) -> None:
    jobs = [
        client.fine_tuning.jobs.create(
            training_file=training_file,
            model="tiny",
            seed=1234,
            hyperparameters={"n_epochs": 1, "batch_size": 4},
        )
        for _ in range(2)
    ]
    losses = []
    for job in jobs:
        assert wait_for_job(client, job.id, ("succeeded", "failed")).status == "succeeded"
        events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
        losses.append([e.data["train_loss"] for e in events if e.type == "metrics"])  # type: ignore[index]
    assert losses[0] == losses[1] and len(losses[0]) == 3


def _metrics_steps(client: openai.OpenAI, job_id: str) -> list[int]:
    events = client.fine_tuning.jobs.list_events(job_id, limit=10_000).data
    return sorted(e.data["step"] for e in events if e.type == "metrics")  # type: ignore[index]


def test_cancel_while_running_stops_training(
    client: openai.OpenAI, training_server: LiveServer, training_file: str
) -> None:
    job = client.fine_tuning.jobs.create(
        training_file=training_file, model="tiny", hyperparameters={"n_epochs": 50, "batch_size": 1}
    )
    wait_until(lambda: _metrics_steps(client, job.id), timeout=120, what="the first training step")
    running = client.fine_tuning.jobs.retrieve(job.id)
    assert running.status == "running"
    assert running.estimated_finish is not None and running.estimated_finish >= running.created_at
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    wait_until(
        lambda: f"run of {job.id} ended: cancelled" in training_server.log(),
        timeout=30,
        what="the training process to stop",
    )
    steps = _metrics_steps(client, job.id)
    assert len(steps) < 600
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    assert client.fine_tuning.jobs.list_events(job.id, limit=1).data[0].message == "Fine-tuning job cancelled" or any(
        e.message == "Fine-tuning job cancelled" for e in client.fine_tuning.jobs.list_events(job.id, limit=10_000).data
    )
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)


def test_pause_then_resume_finishes_without_repeating_steps(client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(
        training_file=training_file, model="tiny", hyperparameters={"n_epochs": 15, "batch_size": 1}
    )
    wait_until(lambda: _metrics_steps(client, job.id), timeout=120, what="the first training step")
    paused = client.fine_tuning.jobs.pause(job.id)
    assert paused.status == "paused"
    done_before = _metrics_steps(client, job.id)
    assert len(done_before) < 180

    resumed = client.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "queued"
    finished = wait_for_job(client, job.id, ("succeeded", "failed"))
    assert finished.status == "succeeded", finished.error
    assert _metrics_steps(client, job.id) == list(range(1, 181))
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=10_000).data]
    assert "Fine-tuning job paused" in messages and "Fine-tuning job resumed" in messages


def test_pause_and_resume_are_refused_in_the_wrong_state(client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(training_file=training_file, model="tiny", hyperparameters={"n_epochs": 1})
    with pytest.raises(openai.BadRequestError) as raised:
        client.fine_tuning.jobs.resume(job.id)
    assert raised.value.code == "invalid_state"
    client.fine_tuning.jobs.cancel(job.id)
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.pause(job.id)


def test_validation_reports_totals_and_truncation(client: openai.OpenAI) -> None:
    long_example = {
        "messages": [
            {"role": "user", "content": "Tell me a long story."},
            {"role": "assistant", "content": "la " * 100},
        ]
    }
    content = chat_examples(10) + (json.dumps(long_example) + "\n").encode()
    file_id = client.files.create(file=("long.jsonl", content), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(training_file=file_id, model="tiny", hyperparameters={"n_epochs": 2})
    wait_for_job(client, job.id, ("queued", "running", "succeeded", "failed"))
    client.fine_tuning.jobs.cancel(job.id)
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    warning = next((e for e in events if e.level == "warn"), None)
    assert warning is not None, "\n".join(f"{e.level} {e.message}" for e in events)
    assert warning.message == "1 example(s) are longer than 64 tokens and will be truncated to that length"
    totals = next(e for e in events if e.message.startswith("Training file has 11 examples"))
    assert totals.data is not None and totals.data["n_examples"] == 11 and totals.data["n_truncated"] == 1
    assert totals.data["trained_tokens"] == 2 * totals.data["n_tokens"]

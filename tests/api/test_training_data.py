"""Bad training data fails the job while it validates, naming the line and the rule; awkward but
valid files pass. Through the API, as a user meets it."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import LiveServer, wait_for_job
from tests.data_corpus import ALL_AWKWARD_CHAT, BROKEN, LEGACY, Broken


@pytest.fixture(scope="module")
def client(training_server: LiveServer) -> openai.OpenAI:
    return training_server.client()


@pytest.mark.parametrize("case", BROKEN, ids=lambda case: case.name)
def test_each_rule_fails_the_job_naming_the_line(client: openai.OpenAI, case: Broken) -> None:
    file_id = client.files.create(file=(f"{case.name}.jsonl", case.content), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model="tiny", training_file=file_id)
    failed = wait_for_job(client, job.id, ("failed", "queued", "running", "succeeded"), timeout=60)
    assert failed.status == "failed"
    assert failed.error is not None
    assert (failed.error.code, failed.error.param) == (case.code, "training_file")
    if case.line is not None:
        assert f"line {case.line} " in failed.error.message
    events = client.fine_tuning.jobs.list_events(job.id, limit=1).data
    assert (events[0].level, events[0].message) == ("error", failed.error.message)


@pytest.mark.parametrize("content", [ALL_AWKWARD_CHAT, LEGACY], ids=["awkward_chat", "legacy"])
def test_awkward_valid_files_pass_validation(client: openai.OpenAI, content: bytes) -> None:
    file_id = client.files.create(file=("ok.jsonl", content), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model="tiny", training_file=file_id, hyperparameters={"n_epochs": 1})
    passed = wait_for_job(client, job.id, ("queued", "running", "succeeded", "failed"), timeout=60)
    assert passed.status != "failed", passed.error
    client.fine_tuning.jobs.cancel(job.id)

"""The seed's Node `testModel`, run with the official `openai` npm package against a live server."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import openai

from tests.conftest import REPO_ROOT, LiveServer, chat_examples, wait_for_job

NODE_DIR = REPO_ROOT / "tests" / "node"


def fine_tuned(client: openai.OpenAI) -> Any:
    """A succeeded one-epoch job on the tiny model."""
    file_id = client.files.create(file=("t.jsonl", chat_examples(10)), purpose="fine-tune").id
    job: Any = client.fine_tuning.jobs.create(model="tiny", training_file=file_id, hyperparameters={"n_epochs": 1})
    job = wait_for_job(client, job.id, ("succeeded", "failed"))
    assert job.status == "succeeded", job.error
    return job


def run_node(script: str, server: LiveServer, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["node", script],
        cwd=NODE_DIR,
        env={**os.environ, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_node_sdk_runs_test_model(training_server: LiveServer) -> None:
    client: openai.OpenAI = training_server.client()
    job = fine_tuned(client)
    result = run_node("test_model.mjs", training_server, MODEL=job.fine_tuned_model, JOB_ID=job.id)
    assert result.stdout.startswith("Model response: ")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["finish_reason"] in ("stop", "length") and report["content_type"] == "string"
    assert report["usage"]["total_tokens"] == report["usage"]["prompt_tokens"] + report["usage"]["completion_tokens"]
    assert report["retrieved"] == job.fine_tuned_model
    all_events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data
    assert report["events"] == len(all_events)  # auto-pagination went through every page of 5
    assert report["event_messages"] == [event.message for event in all_events]
    assert report["streamed_length"] > 0
    assert report["not_found"] == {"status": 404, "code": "model_not_found"}


def test_node_sdk_runs_a_dpo_job_from_a_fine_tuned_model(training_server: LiveServer) -> None:
    sft = fine_tuned(training_server.client())
    result = run_node("dpo_job.mjs", training_server, MODEL=sft.fine_tuned_model)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == "succeeded", report["error"]
    assert report["model"] == sft.fine_tuned_model and report["hyperparameters"] is None
    assert report["method"]["type"] == "dpo"
    assert report["method"]["dpo"]["hyperparameters"]["beta"] == 0.2
    assert report["fine_tuned_model"].startswith("ft:tiny:personal:")
    assert report["answer_type"] == "string"

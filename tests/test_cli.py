"""The `openft` tools as a user runs them: `data check` on files, `jobs follow` on a live job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MODEL_CACHE, REPO_ROOT, LiveServer, chat_examples
from tests.data_corpus import BROKEN, VALID


def run_openft(*arguments: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openft", *arguments],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def cli_env(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {
        "OPENFT_DATA_DIR": str(tmp_path_factory.mktemp("cli-data")),
        "OPENFT_MODELS_DIR": str(MODEL_CACHE),
        "OPENFT_BASE_MODELS": f"tiny={tiny_dir}",
    }


def test_data_check_names_every_broken_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    # A well-formed preference file is broken only for a supervised job: data check checks it as
    # DPO data (test_data_check_understands_preference_pairs).
    cases = [case for case in BROKEN if case.name != "dpo_file"]
    paths = []
    for case in cases:
        paths.append(tmp_path / f"{case.name}.jsonl")
        paths[-1].write_bytes(case.content)
    result = run_openft("data", "check", "--model", "tiny", "--json", "--no-timing", *map(str, paths), env=cli_env)
    assert result.returncode == 1, result.stderr
    reports = json.loads(result.stdout)
    assert len(reports) == len(cases)
    for case, report in zip(cases, reports, strict=True):
        assert report["n_errors"] >= 1, case.name
        codes_and_lines = {(error["code"], error["line"]) for error in report["errors"]}
        assert (case.code, case.line or 0) in codes_and_lines, (case.name, report["errors"])


def test_data_check_reports_a_valid_file_with_measured_timing(cli_env: dict[str, str], tmp_path: Path) -> None:
    paths = []
    for name, content in VALID.items():
        paths.append(tmp_path / f"{name}.jsonl")
        paths[-1].write_bytes(content)
    listed = run_openft("data", "check", "--model", "tiny", "--no-timing", *map(str, paths), env=cli_env)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert listed.stdout.count("No errors: this file can be used for fine-tuning.") == len(VALID)

    duplicated = tmp_path / "train.jsonl"
    duplicated.write_bytes(chat_examples(10) + chat_examples(2))
    result = run_openft("data", "check", "--model", "tiny", "--epochs", "2", str(duplicated), env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "12 example(s), format chat, model tiny" in result.stdout
    assert "exact duplicates: 2" in result.stdout
    assert "tokens per example: min " in result.stdout and " p90 " in result.stdout
    assert "over 2 epoch(s)" in result.stdout
    assert "expected training time on this machine: " in result.stdout and "tokens/s)" in result.stdout
    cache = json.loads((Path(cli_env["OPENFT_DATA_DIR"]) / "throughput.json").read_text())
    assert cache["tiny|auto|auto"] > 0  # model | device | precision

    as_json = json.loads(run_openft("data", "check", "--model", "tiny", "--json", str(duplicated), env=cli_env).stdout)
    assert as_json["n_examples"] == 12 and as_json["n_duplicates"] == 2
    expected_seconds = as_json["trained_tokens"] / as_json["tokens_per_second"]
    assert as_json["estimated_seconds"] == pytest.approx(expected_seconds, rel=0.05)


def test_data_check_understands_preference_pairs(cli_env: dict[str, str], tmp_path: Path) -> None:
    from tests.api.test_dpo import preference_examples

    good = tmp_path / "pairs.jsonl"
    good.write_bytes(preference_examples(12))
    report = json.loads(
        run_openft("data", "check", "--model", "tiny", "--json", "--no-timing", str(good), env=cli_env).stdout
    )
    assert (report["format"], report["n_examples"], report["n_errors"]) == ("preference", 12, 0)
    preferred, rejected = report["preferred_tokens"], report["non_preferred_tokens"]
    assert rejected["mean"] > preferred["mean"]  # the non-preferred answers are the longer ones
    assert report["tokens"]["mean"] == pytest.approx(preferred["mean"] + rejected["mean"], abs=0.2)
    text = run_openft("data", "check", "--model", "tiny", "--no-timing", str(good), env=cli_env).stdout
    assert "input + preferred answer: min " in text and "input + non-preferred answer: min " in text

    broken = tmp_path / "broken-pairs.jsonl"
    lines = preference_examples(12).decode().splitlines()
    lines[4] = json.dumps({**json.loads(lines[4]), "non_preferred_output": []})
    lines[7] = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
    broken.write_text("\n".join(lines))
    result = run_openft("data", "check", "--model", "tiny", "--json", "--no-timing", str(broken), env=cli_env)
    assert result.returncode == 1
    errors = {error["line"]: error["message"] for error in json.loads(result.stdout)["errors"]}
    assert "exactly one assistant message" in errors[5]
    assert "a file must use one format" in errors[8]  # as the service says it


def test_data_check_refuses_missing_files_and_unknown_models(cli_env: dict[str, str], tmp_path: Path) -> None:
    assert run_openft("data", "check", str(tmp_path / "nope.jsonl"), env=cli_env).returncode == 2
    present = tmp_path / "ok.jsonl"
    present.write_bytes(chat_examples(10))
    unknown = run_openft("data", "check", "--model", "gpt-9", str(present), env=cli_env)
    assert unknown.returncode == 2 and "gpt-9" in unknown.stderr


def test_jobs_follow_prints_events_until_the_end(training_server: LiveServer) -> None:
    client = training_server.client()
    file_id = client.files.create(file=("t.jsonl", chat_examples(10)), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model="tiny", training_file=file_id, hyperparameters={"n_epochs": 2})
    result = run_openft(
        "jobs", "follow", job.id, "--base-url", training_server.base_url, "--api-key", "sk-test", env={}, timeout=240
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"[info] Created fine-tuning job: {job.id}" in out
    assert out.index("Fine-tuning job started") < out.index("The job has successfully completed")
    assert out.strip().endswith(f"{job.id}: succeeded ({client.fine_tuning.jobs.retrieve(job.id).fine_tuned_model})")
    assert "20/20" in result.stderr  # the progress bar reached the last step
    missing = run_openft(
        "jobs", "follow", "ftjob-nope", "--base-url", training_server.base_url, "--api-key", "sk-test", env={}
    )
    assert missing.returncode == 2 and "No such fine-tuning job" in missing.stderr


def test_a_second_serve_on_a_busy_port_starts_no_worker(server: LiveServer) -> None:
    port = server.base_url.split(":")[-1].split("/")[0]
    result = run_openft("serve", "--port", port, env={**server.env, "OPENFT_LOG_LEVEL": "INFO"}, timeout=60)
    assert result.returncode == 3
    output = result.stdout + result.stderr
    assert "address already in use" in output.lower()
    assert "openft is serving" not in output and " started" not in output  # no worker ran

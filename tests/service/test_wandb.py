"""The Weights & Biases integration end to end: jobs created through the official SDK on live
servers whose W&B is offline (the runs are read back from their files), unreachable, or not
configured at all."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openai
import pytest

from openft.service import wandb_run
from tests.conftest import TRAINING_ENV, LiveServer, chat_examples, free_port, start_server, wait_for_job, wait_until

OFFLINE_PREFIX = "Logging to Weights and Biases offline in "


@pytest.fixture(scope="module", autouse=True)
def no_wandb_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The servers see only the W&B variables a test gives them, not the developer's own."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("WANDB_")]:
            patch.delenv(name)
        patch.setenv("NETRC", str(tmp_path_factory.mktemp("home") / "no-netrc"))  # nor a `wandb login` key
        yield


def _training_server(tiny_dir: Path, data_dir: Path, **env: str) -> LiveServer:
    return start_server(data_dir, OPENFT_BASE_MODELS=f"tiny={tiny_dir}", OPENFT_MAX_SEQ_LEN="64", **TRAINING_ENV, **env)


@pytest.fixture(scope="module")
def wandb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wandb")


@pytest.fixture(scope="module")
def offline_server(
    no_wandb_environment: None, tiny_dir: Path, wandb_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    live = _training_server(
        tiny_dir, tmp_path_factory.mktemp("wandb-offline"), WANDB_MODE="offline", WANDB_DIR=str(wandb_dir)
    )
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(offline_server: LiveServer) -> openai.OpenAI:
    return offline_server.client()


@pytest.fixture(scope="module")
def training_file(client: openai.OpenAI) -> str:
    return client.files.create(file=("train.jsonl", chat_examples(12)), purpose="fine-tune").id


# --- reading an offline run back -------------------------------------------------------------


def _records(path: Path) -> list[Any]:
    """The records of a `.wandb` file: a 7-byte header, then leveldb-log records (checksum,
    length, type; FULL = 1, FIRST = 2, MIDDLE = 3, LAST = 4) in 32 KiB blocks, each a
    serialized `wandb_internal_pb2.Record`."""
    from wandb.proto import wandb_internal_pb2

    block = 32768
    raw = path.read_bytes()
    assert raw[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pending, index = [], b"", 7
    while index < len(raw):
        if block - index % block < 7:  # too little room left for a header: zero padding
            index += block - index % block
            continue
        _checksum, length, kind = struct.unpack("<IHB", raw[index : index + 7])
        data, index = raw[index + 7 : index + 7 + length], index + 7 + length
        if kind == 0:
            continue
        pending += data
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


class OfflineRun:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        [run_file] = directory.glob("*.wandb")
        self.records = _records(run_file)
        [self.run] = [record.run for record in self.records if record.WhichOneof("record_type") == "run"][:1]

    @property
    def history(self) -> dict[int, dict[str, Any]]:
        rows: dict[int, dict[str, Any]] = {}
        for record in self.records:
            if record.WhichOneof("record_type") == "history":
                items = {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item
                }
                rows[int(items["_step"])] = items
        return rows

    @property
    def config(self) -> dict[str, Any]:
        """The config the run started with, and any updates after."""
        updates = [self.run.config] + [r.config for r in self.records if r.WhichOneof("record_type") == "config"]
        config = {item.key: json.loads(item.value_json) for update in updates for item in update.update}
        return {key: value for key, value in config.items() if key != "_wandb"}

    @property
    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        for record in self.records:
            if record.WhichOneof("record_type") == "summary":
                for item in record.summary.update:
                    summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        return summary


def _offline_runs(wandb_dir: Path, job_id: str) -> list[OfflineRun]:
    return [OfflineRun(path) for path in sorted((wandb_dir / "wandb").glob(f"offline-run-*-{job_id}"))]


def _events(client: openai.OpenAI, job_id: str) -> list[Any]:
    return list(reversed(client.fine_tuning.jobs.list_events(job_id, limit=10_000).data))


# --- the tests ---------------------------------------------------------------------------------


def test_an_offline_run_has_openais_name_tags_config_and_every_steps_metrics(
    client: openai.OpenAI, training_file: str, wandb_dir: Path
) -> None:
    validation = client.files.create(file=("valid.jsonl", chat_examples(3, offset=40)), purpose="fine-tune").id
    integration = {"type": "wandb", "wandb": {"project": "openft-tests", "name": "tiny run", "tags": ["lora", "ci"]}}
    job = client.fine_tuning.jobs.create(
        training_file=training_file,
        validation_file=validation,
        model="tiny",
        suffix="wb",
        hyperparameters={"n_epochs": 2, "batch_size": 3},
        integrations=[integration],  # type: ignore[list-item]
    )
    assert job.integrations is not None and job.integrations[0].wandb.project == "openft-tests"
    job = wait_for_job(client, job.id, ("succeeded", "failed", "cancelled"))
    assert job.status == "succeeded", job.error

    events = _events(client, job.id)
    assert not [event.message for event in events if event.level == "warn"]
    [where] = [event for event in events if event.message.startswith(OFFLINE_PREFIX)]
    assert where.level == "info"
    run_dir = Path(where.data["wandb"]["dir"])  # type: ignore[index]
    assert run_dir.parent == wandb_dir / "wandb" and run_dir.name.startswith("offline-run-")
    assert f"`wandb sync {run_dir}`" in where.message
    assert where.data["wandb"] | {"dir": None} == {  # type: ignore[index]
        "id": job.id,
        "name": "tiny run",
        "project": "openft-tests",
        "entity": None,
        "url": None,
        "dir": None,
    }

    [run] = _offline_runs(wandb_dir, job.id)
    assert run.directory == run_dir
    assert (run.run.run_id, run.run.display_name, run.run.project) == (job.id, "tiny run", "openft-tests")
    assert list(run.run.tags) == ["openai/finetune", "openai/tiny", f"openai/{job.id}", "lora", "ci"]

    config = run.config
    assert config["fine_tuning_job_id"] == job.id and config["model"] == "tiny" and config["seed"] == job.seed
    assert config["hyperparameters"] == {"n_epochs": 2, "batch_size": 3, "learning_rate_multiplier": 2.0}
    assert (config["training_file"], config["validation_file"], config["suffix"]) == (training_file, validation, "wb")

    # One history row per step, at W&B step = the job's step, with the metrics events' keys and values.
    metrics = {event.data["step"]: event.data for event in events if event.type == "metrics"}
    assert sorted(metrics) == list(range(1, 9))  # 2 epochs x ceil(12 / 3)
    history = run.history
    assert sorted(history) == list(range(1, 9))
    for step, data in metrics.items():
        row = history[step]
        for key in ("train_loss", "train_mean_token_accuracy", "valid_loss", "full_valid_loss"):
            if key in data:
                assert row[key] == pytest.approx(data[key]), (step, key)
            else:
                assert key not in row, (step, key)
        assert "total_steps" not in row
    assert "full_valid_loss" in history[4] and "full_valid_loss" in history[8]  # each epoch's end

    assert run.summary["train_loss"] == pytest.approx(metrics[8]["train_loss"])
    assert run.records[-1].WhichOneof("record_type") == "exit" and run.records[-1].exit.exit_code == 0  # finished


def test_a_paused_job_resumes_the_same_run_named_after_the_job(
    client: openai.OpenAI, training_file: str, wandb_dir: Path
) -> None:
    job = client.fine_tuning.jobs.create(
        training_file=training_file,
        model="tiny",
        hyperparameters={"n_epochs": 2, "batch_size": 1},
        integrations=[{"type": "wandb", "wandb": {"project": "openft-tests"}}],
    )
    wait_until(
        lambda: any(event.type == "metrics" for event in _events(client, job.id)), timeout=120, what="a first step"
    )
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    client.fine_tuning.jobs.resume(job.id)
    job = wait_for_job(client, job.id, ("succeeded", "failed", "cancelled"))
    assert job.status == "succeeded", job.error

    wheres = [event for event in _events(client, job.id) if event.message.startswith(OFFLINE_PREFIX)]
    runs = _offline_runs(wandb_dir, job.id)
    assert len(wheres) == len(runs) == 2  # W&B's offline mode writes each run of the job apart
    assert [Path(event.data["wandb"]["dir"]) for event in wheres] == [run.directory for run in runs]  # type: ignore[index]
    assert {(run.run.run_id, run.run.display_name) for run in runs} == {(job.id, job.id)}
    first, second = (sorted(run.history) for run in runs)
    assert first and second and first[0] == 1 and second[-1] == 24
    assert first[-1] < second[0]  # the resumed run logs from the step after the pause on


def test_an_unreachable_wandb_warns_and_training_goes_on(
    no_wandb_environment: None, tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    live = _training_server(
        tiny_dir,
        tmp_path_factory.mktemp("wandb-down"),
        WANDB_API_KEY="x" * 40,
        WANDB_BASE_URL=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        WANDB_INIT_TIMEOUT="5",
        WANDB_X_GRAPHQL_RETRY_MAX="1",  # give up on the unreachable server after a few seconds
        WANDB_DIR=str(tmp_path_factory.mktemp("wandb-down-runs")),
    )
    try:
        client = live.client()
        file_id = client.files.create(file=("t.jsonl", chat_examples(12)), purpose="fine-tune").id
        job = client.fine_tuning.jobs.create(
            training_file=file_id,
            model="tiny",
            hyperparameters={"n_epochs": 1, "batch_size": 4},
            integrations=[{"type": "wandb", "wandb": {"project": "p"}}],
        )
        job = wait_for_job(client, job.id, ("succeeded", "failed", "cancelled"))
        assert job.status == "succeeded", job.error
        events = _events(client, job.id)
        warnings = [event.message for event in events if event.level == "warn"]
        assert len(warnings) == 1, warnings
        assert warnings[0].startswith("Weights and Biases run could not be started: ")
        assert warnings[0].endswith("Training goes on without it.")
        assert [event.data["step"] for event in events if event.type == "metrics"] == [1, 2, 3]  # type: ignore[index]
    finally:
        live.stop()


def test_without_wandb_configured_a_wandb_job_is_refused_naming_integrations(
    no_wandb_environment: None, tmp_path_factory: pytest.TempPathFactory, client: openai.OpenAI, training_file: str
) -> None:
    live = start_server(tmp_path_factory.mktemp("no-wandb"), OPENFT_EMBEDDED_WORKER="false")
    try:
        with pytest.raises(openai.BadRequestError) as raised:
            live.client().fine_tuning.jobs.create(
                training_file="file-abc",
                model="smollm2-135m-instruct",
                integrations=[{"type": "wandb", "wandb": {"project": "p"}}],
            )
    finally:
        live.stop()
    error = raised.value
    assert (error.status_code, error.param, error.code, error.type) == (
        400,
        "integrations",
        "integration_not_available",
        "invalid_request_error",
    )
    assert "WANDB_API_KEY" in error.message and "WANDB_MODE=offline" in error.message

    # A server with W&B takes one wandb integration per job, not two.
    with pytest.raises(openai.BadRequestError) as raised:
        client.fine_tuning.jobs.create(
            training_file=training_file,
            model="tiny",
            integrations=[{"type": "wandb", "wandb": {"project": "a"}}, {"type": "wandb", "wandb": {"project": "b"}}],
        )
    assert (raised.value.param, raised.value.code) == ("integrations", "invalid_value")


# --- what the server decides without W&B ------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "environ", "available"),
    [
        ("auto", {}, False),
        ("auto", {"WANDB_API_KEY": "k"}, True),
        ("auto", {"WANDB_API_KEY": " "}, False),
        ("auto", {"WANDB_MODE": "offline"}, True),
        ("auto", {"WANDB_MODE": "dryrun"}, True),
        ("auto", {"WANDB_MODE": "online"}, False),
        ("auto", {"WANDB_MODE": "disabled", "WANDB_API_KEY": "k"}, False),
        ("enabled", {}, True),
        ("disabled", {"WANDB_API_KEY": "k"}, False),
    ],
)
def test_when_wandb_counts_as_configured(
    setting: str, environ: dict[str, str], available: bool, tmp_path: Path
) -> None:
    environ = {"NETRC": str(tmp_path / "none"), **environ}
    assert (wandb_run.unavailable_reason(setting, environ) is None) is available


def test_a_wandb_login_key_in_netrc_counts(tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine wandb.example.com\n  login user\n  password secret-key\n")
    netrc.chmod(0o600)
    assert wandb_run.unavailable_reason("auto", {"NETRC": str(netrc)}) is not None  # another host's key
    environ = {"NETRC": str(netrc), "WANDB_BASE_URL": "https://wandb.example.com"}
    assert wandb_run.unavailable_reason("auto", environ) is None


def test_run_options_follow_openais_naming(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    job = SimpleNamespace(
        id="ftjob-abc",
        model="ft:m:personal::abc",
        integrations=[{"type": "wandb", "wandb": {"project": "p", "tags": ["mine", "openai/finetune", "t" * 70]}}],
        hyperparameters={"requested": {"n_epochs": None}, "resolved": {"n_epochs": 3}},
        method_type="supervised",
        training_file="file-t",
        validation_file=None,
        suffix=None,
        seed=7,
    )
    options = wandb_run.run_options(job, base_model="m" * 70, train_config={"learning_rate": 2e-4}, data_dir=tmp_path)
    assert options is not None
    assert (options.id, options.name, options.project, options.entity) == ("ftjob-abc", "ftjob-abc", "p", None)
    assert options.tags == ["openai/finetune", ("openai/" + "m" * 70)[:64], "openai/ftjob-abc", "mine", "t" * 64]
    assert options.config["hyperparameters"] == {"n_epochs": 3} and options.config["learning_rate"] == 2e-4
    assert (options.config["model"], options.config["base_model"]) == ("ft:m:personal::abc", "m" * 70)
    assert options.dir == str(tmp_path)  # runs go to <data dir>/wandb/ ...
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    options = wandb_run.run_options(job, base_model="m", train_config={}, data_dir=tmp_path)
    assert options is not None and options.dir is None  # ... unless WANDB_DIR says otherwise
    job.integrations = None
    assert wandb_run.run_options(job, base_model="m", train_config={}, data_dir=tmp_path) is None

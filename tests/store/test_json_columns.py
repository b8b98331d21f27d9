"""JSON in the database, identical on SQLite and PostgreSQL: job metadata (a JSON column) filtered by
key and value, whatever characters the key holds; the JSON-in-text columns (hyperparameters, error,
event data, checkpoint metrics, worker capabilities) read back as written, None as None."""

from __future__ import annotations

import time

import pytest

from openft import ids
from openft.errors import InvalidRequest
from openft.store import Database
from openft.store import checkpoints as checkpoint_rows
from openft.store import events as event_rows
from openft.store import jobs as job_rows
from openft.store import workers as worker_rows
from openft.store.checkpoints import CheckpointRecord
from openft.store.events import EventRecord
from openft.store.workers import WorkerRecord
from tests.store.support import job_record, queue

ODD_KEYS = ['with "quotes"', "dotted.key", "$.path[0]", "back\\slash", "it's", "ключ", "emoji 🎈", " "]


def listed(database: Database, metadata: dict[str, str] | None = None, metadata_is_null: bool = False) -> list[str]:
    with database.transaction() as connection:
        records, _ = job_rows.list_jobs(
            connection, "org-a", after=None, limit=100, metadata=metadata, metadata_is_null=metadata_is_null
        )
    return [record.id for record in records]


def test_metadata_filters_match_key_and_value(database: Database) -> None:
    red = queue(database, "org-a", metadata={"colour": "red", "size": "big"})[0]
    blue = queue(database, "org-a", metadata={"colour": "blue"})[0]
    bare = queue(database, "org-a", metadata=None)[0]
    queue(database, "org-b", metadata={"colour": "red"})  # another organization's
    assert listed(database, metadata={"colour": "red"}) == [red]
    assert listed(database, metadata={"colour": "red", "size": "big"}) == [red]
    assert listed(database, metadata={"colour": "red", "size": "small"}) == []
    assert listed(database, metadata={"colour": "RED"}) == []  # case matters
    assert listed(database, metadata={"shape": "red"}) == []
    assert listed(database, metadata={"colour": "blue"}) == [blue]
    assert listed(database, metadata_is_null=True) == [bare]
    assert listed(database, metadata=None) == [bare, blue, red]  # newest first


@pytest.mark.parametrize("key", ODD_KEYS)
def test_any_key_is_a_value_not_a_path(database: Database, key: str) -> None:
    job = queue(database, "org-a", metadata={key: "v'\"1", "other": "x"})[0]
    queue(database, "org-a", metadata={"other": "x"})
    assert listed(database, metadata={key: "v'\"1"}) == [job]
    assert listed(database, metadata={key: "x"}) == []


def test_metadata_values_that_look_like_other_json_stay_strings(database: Database) -> None:
    numeric = queue(database, "org-a", metadata={"n": "1"})[0]
    truthy = queue(database, "org-a", metadata={"flag": "true"})[0]
    empty = queue(database, "org-a", metadata={"e": ""})[0]
    assert listed(database, metadata={"n": "1"}) == [numeric]
    assert listed(database, metadata={"flag": "true"}) == [truthy]
    assert listed(database, metadata={"e": ""}) == [empty]
    with database.transaction() as connection:
        job = job_rows.get_job(connection, numeric)
    assert job is not None and job.metadata == {"n": "1"}


def test_json_text_columns_read_back_as_written(database: Database) -> None:
    hyperparameters = {"requested": {"n_epochs": "auto", "lr": 1e-5}, "resolved": None, "nested": [1, [2, {"x": None}]]}
    job_id = queue(database, "org-a", hyperparameters=hyperparameters, integrations=None, result_files=["file-1"])[0]
    with database.transaction() as connection:
        error = {"code": "c", "message": 'ünïcødé "quoted"', "param": None}
        assert job_rows.update_job(connection, job_id, error=error, integrations=[{"type": "wandb", "wandb": {}}])
        event_rows.insert_event(
            connection,
            EventRecord(
                id="ftevent-1", job_id=job_id, created_at=1, level="info", message="m", type="message", data=None
            ),
        )
        event_rows.insert_event(
            connection,
            EventRecord(id="ftevent-2", job_id=job_id, created_at=1, level="info", message="m", type="metrics",
                        data={"step": 1, "train_loss": 0.5}),
        )  # fmt: skip
        checkpoint_rows.insert_checkpoint(
            connection,
            CheckpointRecord(id="ftckpt_1", job_id=job_id, organization="org-a", created_at=1, name="ft:x:ckpt-step-1",
                             step_number=1, metrics={"full_valid_loss": None, "step": 1.0}, blob_key="jobs/x"),
        )  # fmt: skip
    with database.transaction() as connection:
        job = job_rows.get_job(connection, job_id)
        events, _ = event_rows.list_events(connection, job_id, after=None, limit=10)
        checkpoints = checkpoint_rows.all_checkpoints(connection, job_id)
    assert job is not None
    assert job.hyperparameters == hyperparameters and job.result_files == ["file-1"]
    assert job.error == error and job.integrations == [{"type": "wandb", "wandb": {}}]
    assert [event.data for event in events] == [{"step": 1, "train_loss": 0.5}, None]
    assert checkpoints[0].metrics == {"full_valid_loss": None, "step": 1.0}


def test_worker_capabilities_round_trip(database: Database) -> None:
    capabilities = {"device": "cuda", "gpus": 8, "memory_bytes": 80 * 1024**3}
    now = time.time()
    with database.transaction() as connection:
        worker_rows.register_worker(connection, WorkerRecord("worker-a", "host-1", ids.now(), now, capabilities))
        worker_rows.register_worker(connection, WorkerRecord("worker-b", "host-2", ids.now(), now - 600, {}))
    with database.transaction() as connection:
        live = worker_rows.live_workers(connection, now - 60)
        assert worker_rows.beat_worker(connection, "worker-a", now + 1)
        assert not worker_rows.beat_worker(connection, "worker-gone", now + 1)
        assert worker_rows.prune_workers(connection, now - 60) == 1
    assert [(worker.id, worker.capabilities) for worker in live] == [("worker-a", capabilities)]
    with database.transaction() as connection:
        assert [worker.id for worker in worker_rows.live_workers(connection, 0)] == ["worker-a"]
        assert worker_rows.live_workers(connection, 0)[0].heartbeat_at == now + 1  # a double, not rounded


def test_a_nul_character_is_refused_on_both_backends(database: Database) -> None:
    """PostgreSQL's text can't hold U+0000: rather than a driver error (a 500), a bad request, on
    SQLite too, so the two store and find the same things."""
    with database.transaction() as connection, pytest.raises(InvalidRequest, match="NUL"):
        job_rows.insert_job(connection, job_record("org-a", suffix="a\x00b"))
    with database.transaction() as connection, pytest.raises(InvalidRequest, match="NUL"):
        job_rows.get_job(connection, "ftjob-\x00")
    with database.transaction() as connection:
        assert job_rows.list_jobs(connection, "org-a", after=None, limit=10, metadata=None) == ([], False)

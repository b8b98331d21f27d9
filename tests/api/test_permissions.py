"""Checkpoint permissions through the official SDK: `personal` shares a fine-tuned model and a
checkpoint (the tiny model, trained once) with `rival`, which uses them until the permission goes.
A second API-only server on the same data has admin keys; the single-user rules are checked on the
services themselves, over the same database."""

from __future__ import annotations

import re
import sqlite3
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.fine_tuning.checkpoints import PermissionRetrieveResponse

from openft.config import Settings
from openft.errors import InvalidRequest, NotFound
from openft.service import build_services
from tests.conftest import (
    MODEL_CACHE,
    OTHER_ORGANIZATION_KEY,
    TRAINING_ENV,
    LiveServer,
    chat_examples,
    start_server,
    wait_for_job,
)

ADMIN_KEY = "sk-admin-personal"
RIVAL_ADMIN_KEY = "sk-admin-rival"
NO_PERMISSION = "cp_" + "x" * 24
QUESTION = [{"role": "user", "content": "What is 3 plus 3?"}]


@pytest.fixture(scope="module")
def client(training_server: LiveServer) -> openai.OpenAI:
    return training_server.client()


@pytest.fixture(scope="module")
def rival(training_server: LiveServer) -> openai.OpenAI:
    return training_server.client(OTHER_ORGANIZATION_KEY)


@pytest.fixture(scope="module")
def job(client: openai.OpenAI) -> Any:
    """One short run: two epochs of two steps, so a fine-tuned model and one earlier checkpoint."""
    file_id = client.files.create(file=("t.jsonl", chat_examples(10)), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model="tiny", training_file=file_id, suffix="shared", seed=5, hyperparameters={"n_epochs": 2, "batch_size": 5}
    )
    job = wait_for_job(client, job.id, ("succeeded", "failed", "cancelled"))
    assert job.status == "succeeded", job.error
    return job


@pytest.fixture(scope="module")
def step_checkpoint(client: openai.OpenAI, job: Any) -> str:
    oldest = client.fine_tuning.jobs.checkpoints.list(job.id).data[-1].fine_tuned_model_checkpoint
    assert oldest.endswith(":ckpt-step-2")
    return oldest


@pytest.fixture(scope="module")
def admin_server(training_server: LiveServer, tiny_dir: Path) -> Iterator[LiveServer]:
    """The same data, served by a second API process (no worker) where admin keys are set."""
    live = start_server(
        training_server.data_dir,
        OPENFT_BASE_MODELS=f"tiny={tiny_dir}",
        OPENFT_EMBEDDED_WORKER="false",
        OPENFT_ADMIN_KEYS=f"{ADMIN_KEY}:personal,{RIVAL_ADMIN_KEY}:rival",
        **TRAINING_ENV,
    )
    yield live
    live.stop()


def retrieve(client: openai.OpenAI, checkpoint: str, **query: Any) -> Any:
    """The SDK's deprecated plain GET (the same request as `list`), without its warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return client.fine_tuning.checkpoints.permissions.retrieve(checkpoint, **query)


def ask(client: openai.OpenAI, model: str) -> str | None:
    completion = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=4, temperature=0)  # type: ignore[arg-type]
    assert completion.model == model
    return completion.choices[0].message.content


def refused(call: Callable[[], Any], error: type[openai.APIStatusError], code: str) -> openai.APIStatusError:
    with pytest.raises(error) as raised:
        call()
    assert raised.value.code == code, raised.value.body
    assert isinstance(raised.value.body, dict) and raised.value.body["type"] == "invalid_request_error"
    return raised.value


def test_a_shared_model_is_usable_until_the_permission_goes(
    client: openai.OpenAI, rival: openai.OpenAI, job: Any, step_checkpoint: str
) -> None:
    model = job.fine_tuned_model
    permissions = client.fine_tuning.checkpoints.permissions
    refused(lambda: rival.models.retrieve(model), openai.NotFoundError, "model_not_found")

    created = permissions.create(model, project_ids=["rival"])
    (permission,) = created.data
    assert re.fullmatch(r"cp_[A-Za-z0-9]{24}", permission.id)
    assert (permission.object, permission.project_id) == ("checkpoint.permission", "rival")
    assert permission.created_at >= job.finished_at
    # The organization's id names it too, and sharing again changes nothing.
    assert [p.id for p in permissions.create(model, project_ids=["org-rival", "rival"]).data] == [permission.id]

    retrieved = rival.models.retrieve(model)
    assert (retrieved.id, retrieved.owned_by) == (model, "personal")
    assert {m.id: m.owned_by for m in rival.models.list()}[model] == "personal"
    assert ask(rival, model) == ask(client, model)  # the same adapter
    refused(lambda: rival.models.retrieve(step_checkpoint), openai.NotFoundError, "model_not_found")
    # ... and as the start of a job of its own (continued fine-tuning).
    rival_file = rival.files.create(file=("t.jsonl", chat_examples(10)), purpose="fine-tune").id
    continued = rival.fine_tuning.jobs.create(model=model, training_file=rival_file, hyperparameters={"n_epochs": 1})
    continued = wait_for_job(rival, continued.id, ("succeeded", "failed", "cancelled"))
    assert continued.status == "succeeded", continued.error
    assert continued.model == model and continued.fine_tuned_model.startswith("ft:tiny:rival::")

    # The grantee uses it, but can't delete it or share it.
    refused(lambda: rival.models.delete(model), openai.PermissionDeniedError, "insufficient_permissions")
    theirs = rival.fine_tuning.checkpoints.permissions
    for call in (
        lambda: theirs.create(model, project_ids=["rival"]),
        lambda: theirs.list(model),
        lambda: theirs.delete(permission.id, fine_tuned_model_checkpoint=model),
    ):
        refused(call, openai.PermissionDeniedError, "insufficient_permissions")
    assert [p.id for p in permissions.list(model)] == [permission.id]

    deleted = permissions.delete(permission.id, fine_tuned_model_checkpoint=model)
    assert (deleted.id, deleted.object, deleted.deleted) == (permission.id, "checkpoint.permission", True)
    assert refused(lambda: ask(rival, model), openai.NotFoundError, "model_not_found").param == "model"
    refused(lambda: rival.models.retrieve(model), openai.NotFoundError, "model_not_found")
    assert model not in [m.id for m in rival.models.list()]
    refused(
        lambda: rival.fine_tuning.jobs.create(model=model, training_file=rival_file),
        openai.BadRequestError,
        "model_not_available",
    )
    assert permissions.list(model).data == []
    assert client.models.retrieve(model).id == model


def test_the_list_pages_by_last_id(client: openai.OpenAI, training_server: LiveServer, step_checkpoint: str) -> None:
    created = client.fine_tuning.checkpoints.permissions.create(step_checkpoint, project_ids=["rival", "org-personal"])
    assert [p.project_id for p in created.data] == ["rival", "personal"]
    assert (created.first_id, created.last_id, created.has_more) == (created.data[0].id, created.data[1].id, False)  # type: ignore[attr-defined]
    newest_first = [p.id for p in reversed(created.data)]

    first = retrieve(client, step_checkpoint, limit=1)
    assert [p.id for p in first.data] == newest_first[:1] and first.has_more
    assert first.first_id == first.last_id == newest_first[0]
    second = retrieve(client, step_checkpoint, limit=1, after=first.last_id)
    assert [p.id for p in second.data] == newest_first[1:] and not second.has_more
    assert [p.id for p in retrieve(client, step_checkpoint, order="ascending").data] == newest_first[::-1]
    assert [p.project_id for p in retrieve(client, step_checkpoint, project_id="org-rival").data] == ["rival"]
    assert retrieve(client, step_checkpoint, project_id="nobody").data == []
    # `list` follows `last_id` from page to page.
    assert [p.id for p in client.fine_tuning.checkpoints.permissions.list(step_checkpoint, limit=1)] == newest_first

    with training_server.http() as http:  # the path as the SDKs send it: colons literal
        body = http.get(f"/fine_tuning/checkpoints/{step_checkpoint}/permissions").json()
        assert set(body) == {"object", "data", "first_id", "last_id", "has_more"}
        PermissionRetrieveResponse.model_validate(body)
        posted = http.post(f"/fine_tuning/checkpoints/{step_checkpoint}/permissions", json={"project_ids": ["rival"]})
        assert set(posted.json()) == set(body) and posted.json()["data"][0]["id"] == created.data[0].id


def test_invalid_requests(
    client: openai.OpenAI, rival: openai.OpenAI, training_server: LiveServer, job: Any, step_checkpoint: str
) -> None:
    model = job.fine_tuned_model
    permissions = client.fine_tuning.checkpoints.permissions
    unknown = "ft:tiny:personal:shared:AbCd1234:ckpt-step-1"
    bad, missing, checkpoint = openai.BadRequestError, openai.NotFoundError, "fine_tuned_model_checkpoint"
    cases: list[tuple[Callable[[], Any], type[openai.APIStatusError], str, str]] = [
        (lambda: permissions.create(model, project_ids=[]), bad, "invalid_value", "project_ids"),
        (lambda: permissions.create(model, project_ids=["nobody"]), bad, "invalid_value", "project_ids.0"),
        (lambda: permissions.create(model, project_ids=["rival", ""]), bad, "invalid_value", "project_ids.1"),
        (lambda: permissions.create(unknown, project_ids=["rival"]), missing, "model_not_found", checkpoint),
        (lambda: permissions.create("tiny", project_ids=["rival"]), missing, "model_not_found", checkpoint),
        (lambda: permissions.list(unknown), missing, "model_not_found", checkpoint),
        (lambda: retrieve(client, model, after="cp_nothing"), bad, "invalid_value", "after"),
        (lambda: retrieve(client, model, limit=0), bad, "invalid_value", "limit"),
        (lambda: permissions.delete(NO_PERMISSION, fine_tuned_model_checkpoint=model), missing, "not_found", "permission_id"),  # noqa: E501
        # Another organization's model, not shared with it: as if it didn't exist.
        (lambda: rival.fine_tuning.checkpoints.permissions.list(model), missing, "model_not_found", checkpoint),
    ]  # fmt: skip
    for call, error, code, param in cases:
        assert refused(call, error, code).param == param
    # A permission is deleted only through its own checkpoint.
    other = permissions.create(step_checkpoint, project_ids=["rival"]).data[0].id
    refused(lambda: permissions.delete(other, fine_tuned_model_checkpoint=model), openai.NotFoundError, "not_found")
    with training_server.http() as http:
        missing = http.post(f"/fine_tuning/checkpoints/{model}/permissions", json={}).json()["error"]
        assert (missing["code"], missing["param"]) == ("missing_required_parameter", "project_ids")
        order = http.get(f"/fine_tuning/checkpoints/{model}/permissions", params={"order": "desc"}).json()["error"]
        assert (order["code"], order["param"]) == ("invalid_value", "order")


def test_with_admin_keys_only_an_admin_key_of_the_owner_manages(admin_server: LiveServer, job: Any) -> None:
    model = job.fine_tuned_model
    plain, admin, rival_admin = (admin_server.client(key) for key in ("sk-test", ADMIN_KEY, RIVAL_ADMIN_KEY))
    refused(
        lambda: rival_admin.fine_tuning.checkpoints.permissions.list(model), openai.NotFoundError, "model_not_found"
    )
    by_plain = plain.fine_tuning.checkpoints.permissions
    for call in (
        lambda: by_plain.create(model, project_ids=["rival"]),
        lambda: by_plain.list(model),
        lambda: by_plain.delete(NO_PERMISSION, fine_tuned_model_checkpoint=model),
    ):
        message = refused(call, openai.PermissionDeniedError, "admin_key_required").message
        assert "admin key" in message and "OPENFT_ADMIN_KEYS" in message
    assert plain.models.retrieve(model).id == model  # a plain key is still a key for everything else

    created = admin.fine_tuning.checkpoints.permissions.create(model, project_ids=["org-rival"]).data[0]
    assert [p.id for p in admin.fine_tuning.checkpoints.permissions.list(model)] == [created.id]
    assert admin_server.client(OTHER_ORGANIZATION_KEY).models.retrieve(model).owned_by == "personal"
    refused(
        lambda: rival_admin.fine_tuning.checkpoints.permissions.list(model),
        openai.PermissionDeniedError,
        "insufficient_permissions",
    )
    # An admin key is an API key of its organization.
    assert admin.fine_tuning.jobs.retrieve(job.id).id == job.id
    assert model in [m.id for m in admin.models.list()]
    assert admin.fine_tuning.checkpoints.permissions.delete(created.id, fine_tuned_model_checkpoint=model).deleted


def test_services_honour_permissions_in_single_user_mode_and_for_jobs(
    training_server: LiveServer, tiny_dir: Path, job: Any
) -> None:
    """On the same database: `usable_checkpoint`, which jobs starting from a model call, and a
    single-user server, whose one organization can only share with itself."""
    model = job.fine_tuned_model
    shared = {
        "data_dir": training_server.data_dir,
        "models_dir_override": MODEL_CACHE,
        "base_models": f"tiny={tiny_dir}",
    }
    keyed = build_services(Settings(**shared, api_keys=TRAINING_ENV["OPENFT_API_KEYS"], admin_keys=""))  # type: ignore[arg-type]
    try:
        with pytest.raises(NotFound):
            keyed.models.usable_checkpoint("rival", model)
        permission = keyed.permissions.create("personal", model, ["rival"], admin=False).data[0]
        checkpoint, base_model = keyed.models.usable_checkpoint("rival", model)
        assert (checkpoint.name, checkpoint.organization, base_model) == (model, "personal", "tiny")
        assert keyed.blobs.path(checkpoint.blob_key).is_dir()
        keyed.permissions.delete("personal", model, permission.id, admin=False)
        with pytest.raises(NotFound):
            keyed.models.usable_checkpoint("rival", model)
    finally:
        keyed.close()

    single = build_services(Settings(**shared, api_keys="", admin_keys=""))  # type: ignore[arg-type]
    try:
        assert single.settings.single_user and single.settings.organizations == {"personal"}
        permissions = single.permissions
        created = permissions.create("personal", model, ["org-personal", "personal"], admin=False).data
        assert [p.project_id for p in created] == ["personal"]
        with pytest.raises(InvalidRequest):
            permissions.create("personal", model, ["rival"], admin=False)  # no such organization here
        page = permissions.list(
            "personal", model, admin=False, after=None, limit=10, order="descending", project_id=None
        )
        assert [p.id for p in page.data] == [created[0].id]
        assert single.models.resolve("personal", model).base_model == "tiny"
        assert permissions.delete("personal", model, created[0].id, admin=False).deleted
    finally:
        single.close()


def test_deleting_a_checkpoint_deletes_its_permissions(
    client: openai.OpenAI, rival: openai.OpenAI, training_server: LiveServer, job: Any, step_checkpoint: str
) -> None:
    client.fine_tuning.checkpoints.permissions.create(step_checkpoint, project_ids=["rival"])
    assert rival.models.retrieve(step_checkpoint).owned_by == "personal"
    checkpoint_id = client.fine_tuning.jobs.checkpoints.list(job.id).data[-1].id
    assert client.models.delete(step_checkpoint).deleted
    refused(lambda: rival.models.retrieve(step_checkpoint), openai.NotFoundError, "model_not_found")
    refused(
        lambda: client.fine_tuning.checkpoints.permissions.list(step_checkpoint),
        openai.NotFoundError,
        "model_not_found",
    )
    with sqlite3.connect(training_server.data_dir / "openft.db") as database:
        left = database.execute(
            "SELECT count(*) FROM checkpoint_permissions WHERE checkpoint_id = ?", (checkpoint_id,)
        ).fetchone()
    assert left == (0,)

"""OpenAI's cookbook flow for preference tuning through the official SDK: supervised first, then DPO
from that model, then chat with the result; and DPO's rules on files and hyperparameters."""

from __future__ import annotations

import base64
import json

import openai
import pytest

from tests.conftest import LiveServer, chat_examples, wait_for_job

pytestmark = pytest.mark.usefixtures("training_server")


@pytest.fixture(scope="module")
def client(training_server: LiveServer) -> openai.OpenAI:
    return training_server.client()


def preference_examples(count: int, offset: int = 0) -> bytes:
    lines = [
        json.dumps(
            {
                "input": {
                    "messages": [
                        {"role": "system", "content": "You answer arithmetic questions tersely."},
                        {"role": "user", "content": f"What is {i} plus {i}?"},
                    ]
                },
                "preferred_output": [{"role": "assistant", "content": f"{2 * i}."}],
                "non_preferred_output": [{"role": "assistant", "content": f"{i} plus {i} is {2 * i}, I think."}],
            }
        )
        for i in range(offset, offset + count)
    ]
    return ("\n".join(lines) + "\n").encode()


def upload(client: openai.OpenAI, content: bytes) -> str:
    return client.files.create(file=("data.jsonl", content), purpose="fine-tune").id


def test_supervised_then_dpo_from_that_model_then_chat(client: openai.OpenAI) -> None:
    sft = client.fine_tuning.jobs.create(
        model="tiny", training_file=upload(client, chat_examples(10)), suffix="sft", hyperparameters={"n_epochs": 2}
    )
    sft = wait_for_job(client, sft.id, ("succeeded", "failed", "cancelled"))
    assert sft.status == "succeeded", sft.error

    dpo = client.fine_tuning.jobs.create(
        model=sft.fine_tuned_model,
        training_file=upload(client, preference_examples(10)),
        validation_file=upload(client, preference_examples(3, offset=50)),
        suffix="dpo",
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": "auto", "n_epochs": 2, "batch_size": 5}}},
    )
    assert dpo.model == sft.fine_tuned_model  # as OpenAI shows a continued job
    assert dpo.method.type == "dpo" and dpo.hyperparameters is None
    dpo = wait_for_job(client, dpo.id, ("succeeded", "failed", "cancelled"))
    assert dpo.status == "succeeded", dpo.error

    # Resolved as OpenAI shows DPO jobs: under method.dpo, top-level hyperparameters null.
    assert dpo.hyperparameters is None
    assert dpo.method.dpo is not None and dpo.method.dpo.hyperparameters is not None
    resolved = dpo.method.dpo.hyperparameters
    assert (resolved.beta, resolved.n_epochs, resolved.batch_size) == (0.1, 2, 5)
    assert isinstance(resolved.learning_rate_multiplier, float)
    # The new model is named after the base model, as OpenAI names continued models.
    assert dpo.fine_tuned_model is not None and dpo.fine_tuned_model.startswith("ft:tiny:personal:dpo:")

    events = client.fine_tuning.jobs.list_events(dpo.id, limit=100).data
    assert f"Training continues the fine-tuned model {sft.fine_tuned_model}" in [e.message for e in events]
    metrics = sorted((e.data for e in events if e.type == "metrics" and e.data), key=lambda d: d["step"])
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    first, last = metrics[0], metrics[-1]
    assert first["train_loss"] == pytest.approx(0.6931, abs=1e-3)  # policy = reference at step 1
    assert {"train_preference_accuracy", "train_reward_margin"} <= set(first)
    assert {"full_valid_loss", "full_valid_preference_accuracy", "full_valid_reward_margin"} <= set(last)
    csv_rows = base64.b64decode(client.files.content(dpo.result_files[0]).content).decode().splitlines()
    assert csv_rows[0].split(",")[-2:] == ["train_reward_margin", "valid_reward_margin"]
    assert len(csv_rows) == 1 + 4

    answer = client.chat.completions.create(
        model=dpo.fine_tuned_model, messages=[{"role": "user", "content": "What is 3 plus 3?"}], max_tokens=5
    )
    assert answer.model == dpo.fine_tuned_model and answer.choices[0].message.content is not None


def test_a_chat_file_fails_a_dpo_job_with_openais_message(client: openai.OpenAI) -> None:
    file_id = upload(client, chat_examples(10))
    job = client.fine_tuning.jobs.create(model="tiny", training_file=file_id, method={"type": "dpo"})
    job = wait_for_job(client, job.id, ("failed", "succeeded"))
    assert job.status == "failed" and job.error is not None
    assert (job.error.code, job.error.param) == ("invalid_training_file", "training_file")
    assert job.error.message == (
        "The job failed due to an invalid training file. Invalid file format. "
        f"Input file {file_id} is in the fine-tune-chat format, but the specified fine-tuning job is not "
        "using 'supervised' as the training method (provided method=dpo). "
    )


def test_a_preference_file_fails_a_supervised_job(client: openai.OpenAI) -> None:
    job = client.fine_tuning.jobs.create(model="tiny", training_file=upload(client, preference_examples(10)))
    job = wait_for_job(client, job.id, ("failed", "succeeded"))
    assert job.status == "failed" and job.error is not None and "preference (DPO)" in job.error.message


@pytest.mark.parametrize(
    ("example", "problem"),
    [
        ({"input": {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]}},
         "ending with an assistant message"),
        ({"preferred_output": [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]},
         "exactly one assistant message"),
        ({"non_preferred_output": [{"role": "user", "content": "b"}]}, "not 'assistant'"),
    ],
)  # fmt: skip
def test_preference_rules_fail_validation_naming_the_line(
    client: openai.OpenAI, example: dict[str, object], problem: str
) -> None:
    lines = preference_examples(10).decode().splitlines()
    broken = {**json.loads(lines[3]), **example}
    lines[3] = json.dumps(broken)
    job = client.fine_tuning.jobs.create(
        model="tiny", training_file=upload(client, "\n".join(lines).encode()), method={"type": "dpo"}
    )
    job = wait_for_job(client, job.id, ("failed", "succeeded"))
    assert job.status == "failed" and job.error is not None
    assert "Example at line 4" in job.error.message and problem in job.error.message


def test_tools_are_allowed_in_the_input(client: openai.OpenAI) -> None:
    lines = [json.loads(line) for line in preference_examples(10).decode().splitlines()]
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}
    for line in lines:
        line["input"]["tools"] = [tool]
    content = "\n".join(json.dumps(line) for line in lines).encode()
    job = client.fine_tuning.jobs.create(
        model="tiny", training_file=upload(client, content), method={"type": "dpo"}, hyperparameters={"n_epochs": 1}
    )
    job = wait_for_job(client, job.id, ("failed", "succeeded"))
    assert job.status == "succeeded", job.error


@pytest.mark.parametrize("beta", [0, 2.5, -1])
def test_beta_out_of_range_is_400(client: openai.OpenAI, beta: float) -> None:
    file_id = upload(client, preference_examples(10))
    with pytest.raises(openai.BadRequestError) as raised:
        client.fine_tuning.jobs.create(
            model="tiny", training_file=file_id, method={"type": "dpo", "dpo": {"hyperparameters": {"beta": beta}}}
        )
    assert raised.value.body["param"] == "method.dpo.hyperparameters.beta"  # type: ignore[index]


def test_reinforcement_is_400_on_method_type(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.fine_tuning.jobs.create(
            model="tiny", training_file=upload(client, chat_examples(10)), method={"type": "reinforcement"}
        )
    assert raised.value.body["param"] == "method.type"  # type: ignore[index]


def test_continuing_a_model_of_another_organization_is_400(client: openai.OpenAI, training_server: LiveServer) -> None:
    from tests.conftest import OTHER_ORGANIZATION_KEY

    mine = client.fine_tuning.jobs.create(
        model="tiny", training_file=upload(client, chat_examples(10)), hyperparameters={"n_epochs": 1}
    )
    mine = wait_for_job(client, mine.id, ("succeeded", "failed"))
    rival = training_server.client(OTHER_ORGANIZATION_KEY)
    rival_file = rival.files.create(file=("t.jsonl", chat_examples(10)), purpose="fine-tune").id
    with pytest.raises(openai.BadRequestError) as raised:
        rival.fine_tuning.jobs.create(model=mine.fine_tuned_model, training_file=rival_file)
    assert raised.value.body["code"] == "model_not_available"  # type: ignore[index]

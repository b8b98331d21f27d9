"""Chat Completions, Completions and the Models API over base, fine-tuned and checkpoint models,
through the official SDK against a live server (the tiny model, trained for real)."""

from __future__ import annotations

import threading
from typing import Any

import openai
import pytest
from openai.types import Completion, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.conftest import OTHER_ORGANIZATION_KEY, LiveServer, chat_examples, wait_for_job

QUESTION = [
    {"role": "system", "content": "You answer arithmetic questions tersely."},
    {"role": "user", "content": "What is 3 plus 3?"},
]


@pytest.fixture(scope="module")
def client(training_server: LiveServer) -> openai.OpenAI:
    return training_server.client()


def _train(client: openai.OpenAI, suffix: str, multiplier: float) -> Any:
    file_id = client.files.create(file=("t.jsonl", chat_examples(10)), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=file_id,
        suffix=suffix,
        seed=3,
        hyperparameters={"n_epochs": 3, "batch_size": 2, "learning_rate_multiplier": multiplier},
    )
    job = wait_for_job(client, job.id, ("succeeded", "failed", "cancelled"))
    assert job.status == "succeeded", job.error
    return job


@pytest.fixture(scope="module")
def jobs(client: openai.OpenAI) -> list[Any]:
    return [_train(client, "alpha", 100), _train(client, "beta", 60)]


def greedy(client: openai.OpenAI, model: str, **extra: Any) -> Any:
    arguments = {"model": model, "messages": QUESTION, "temperature": 0, "max_tokens": 12, **extra}
    return client.chat.completions.create(**arguments)


def test_base_fine_tuned_and_checkpoint_models_answer(client: openai.OpenAI, jobs: list[Any]) -> None:
    job = jobs[0]
    checkpoint = client.fine_tuning.jobs.checkpoints.list(job.id).data[-1]
    assert checkpoint.fine_tuned_model_checkpoint.endswith(":ckpt-step-5")
    answers = {}
    for model in ("tiny", job.fine_tuned_model, checkpoint.fine_tuned_model_checkpoint):
        completion = greedy(client, model)
        assert completion.model == model and completion.object == "chat.completion"
        assert completion.id.startswith("chatcmpl-")
        choice = completion.choices[0]
        assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
        assert choice.finish_reason in ("stop", "length")
        assert completion.usage is not None and completion.usage.prompt_tokens > 10
        assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
        answers[model] = choice.message.content
    assert answers["tiny"] != answers[job.fine_tuned_model]


def test_streaming_equals_non_streaming_for_greedy(client: openai.OpenAI, jobs: list[Any]) -> None:
    model = jobs[0].fine_tuned_model
    expected = greedy(client, model)
    chunks = list(greedy(client, model, stream=True, stream_options={"include_usage": True}))
    assert all(chunk.object == "chat.completion.chunk" and chunk.model == model for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == expected.choices[0].message.content
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert finishes == [expected.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == expected.usage


def test_raw_json_and_sse_frames_match_the_sdk_types(training_server: LiveServer, jobs: list[Any]) -> None:
    body = {"model": jobs[0].fine_tuned_model, "messages": QUESTION, "max_tokens": 4, "temperature": 0}
    with training_server.http() as http:
        ChatCompletion.model_validate(http.post("/chat/completions", json=body).json())
        with http.stream("POST", "/chat/completions", json={**body, "stream": True}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            frames = [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    for frame in frames[:-1]:
        ChatCompletionChunk.model_validate_json(frame)


def test_sampling_parameters(client: openai.OpenAI, jobs: list[Any]) -> None:
    model = jobs[0].fine_tuned_model
    several = client.chat.completions.create(model=model, messages=QUESTION, n=3, max_tokens=5, seed=11)
    assert [choice.index for choice in several.choices] == [0, 1, 2]
    again = client.chat.completions.create(model=model, messages=QUESTION, n=3, max_tokens=5, seed=11)
    assert [c.message.content for c in again.choices] == [c.message.content for c in several.choices]

    limited = greedy(client, model, max_tokens=None, max_completion_tokens=3)
    assert limited.choices[0].finish_reason == "length" and limited.usage and limited.usage.completion_tokens == 3

    full = greedy(client, "tiny").choices[0].message.content or ""
    assert len(full) > 4
    stop = full[2:4]
    stopped = greedy(client, "tiny", stop=[stop])
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == full[: full.index(stop)]

    with_logprobs = greedy(client, model, logprobs=True, top_logprobs=3, max_tokens=4)
    content = with_logprobs.choices[0].logprobs
    assert content is not None and content.content is not None and len(content.content) >= 1
    assert all(entry.logprob <= 0 and len(entry.top_logprobs) == 3 for entry in content.content)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": 3}, "temperature"),
        ({"n": 0}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"top_logprobs": 30, "logprobs": True}, "top_logprobs"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ],
)
def test_invalid_values_are_400_with_param(client: openai.OpenAI, extra: dict[str, Any], param: str) -> None:
    arguments = {"model": "tiny", "messages": QUESTION, **extra}
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(**arguments)
    assert raised.value.param == param


def test_unknown_fields_are_ignored(client: openai.OpenAI) -> None:
    completion = greedy(client, "tiny", user="someone", store=False, extra_body={"future": 1}, metadata={"a": "b"})
    assert completion.choices


def test_two_concurrent_streams_to_two_adapters_keep_their_answers(client: openai.OpenAI, jobs: list[Any]) -> None:
    models = [job.fine_tuned_model for job in jobs]
    alone = {model: greedy(client, model, max_tokens=24).choices[0].message.content for model in models}
    assert alone[models[0]] != alone[models[1]]
    together: dict[str, str] = {}

    def stream(model: str) -> None:
        chunks = greedy(client, model, max_tokens=24, stream=True)
        together[model] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    threads = [threading.Thread(target=stream, args=(model,)) for model in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert together == alone


def test_legacy_completions(client: openai.OpenAI, training_server: LiveServer) -> None:
    completion = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=5, temperature=0)
    assert completion.object == "text_completion" and completion.choices[0].finish_reason == "length"
    streamed = client.completions.create(
        model="tiny", prompt="Once upon a time", max_tokens=5, temperature=0, stream=True
    )
    assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == completion.choices[0].text
    with training_server.http() as http:
        Completion.model_validate(http.post("/completions", json={"model": "tiny", "prompt": ["a", "b"]}).json())


def test_models_list_retrieve_and_isolation(
    client: openai.OpenAI, training_server: LiveServer, jobs: list[Any]
) -> None:
    listed = {model.id: model for model in client.models.list()}
    assert "tiny" in listed
    for job in jobs:
        model = listed[job.fine_tuned_model]
        assert model.owned_by == "personal" and model.created > 0
    checkpoint = client.fine_tuning.jobs.checkpoints.list(jobs[0].id).data[-1].fine_tuned_model_checkpoint
    assert client.models.retrieve(checkpoint).id == checkpoint
    with training_server.http() as http:
        Model.model_validate(http.get(f"/models/{jobs[0].fine_tuned_model}").json())

    rival = training_server.client(OTHER_ORGANIZATION_KEY)
    assert jobs[0].fine_tuned_model not in [model.id for model in rival.models.list()]
    for call in (rival.models.retrieve, rival.models.delete):
        with pytest.raises(openai.NotFoundError):
            call(jobs[0].fine_tuned_model)
    with pytest.raises(openai.NotFoundError) as raised:
        greedy(rival, jobs[0].fine_tuned_model)
    assert raised.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        greedy(client, "ft:tiny:personal:nothing:AbCd1234")


def test_delete_then_404(client: openai.OpenAI, training_server: LiveServer) -> None:
    job = _train(client, "doomed", 10)
    assert greedy(client, job.fine_tuned_model).choices  # loaded into memory first
    deleted = client.models.delete(job.fine_tuned_model)
    assert (deleted.id, deleted.object, deleted.deleted) == (job.fine_tuned_model, "model", True)
    for call in (client.models.retrieve, lambda name: greedy(client, name), client.models.delete):
        with pytest.raises(openai.NotFoundError):
            call(job.fine_tuned_model)
    assert job.fine_tuned_model not in [model.id for model in client.models.list()]
    adapter_dirs = list((training_server.data_dir / "blobs" / "jobs" / job.id / "checkpoints").glob("step-*"))
    assert len(adapter_dirs) == 2  # the final adapter's files are gone, the two earlier checkpoints stay
    with pytest.raises(openai.BadRequestError) as raised:
        client.models.delete("tiny")
    assert raised.value.code == "base_model_not_deletable"


def test_a_request_answers_as_alone_while_seven_others_with_other_models_run(
    client: openai.OpenAI, jobs: list[Any]
) -> None:
    checkpoints = [client.fine_tuning.jobs.checkpoints.list(j.id).data[-1].fine_tuned_model_checkpoint for j in jobs]
    models = ["tiny", *(job.fine_tuned_model for job in jobs), *checkpoints]
    alone = {model: greedy(client, model, max_tokens=24).choices[0].message.content for model in models}
    assert len(set(alone.values())) >= 3  # the adapters really differ
    mix = [models[i % len(models)] for i in range(8)]
    together: list[str | None] = [None] * len(mix)
    start = threading.Barrier(len(mix))

    def ask(i: int) -> None:
        start.wait()
        if i % 2:  # half of them streamed
            chunks = greedy(client, mix[i], max_tokens=24, stream=True)
            together[i] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            together[i] = greedy(client, mix[i], max_tokens=24).choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(mix))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert together == [alone[model] for model in mix]

"""Serving under load, through a live server: bounded admission (429), fairness between
organizations, cancellation on disconnect, n choices from one prefill, and routes that answer
while generation is busy. The tiny base model; OPENFT_MAX_BATCH_SIZE=4 so that load fills it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import LiveServer, start_server, wait_until

PER_ORGANIZATION = 40
QUESTION = [{"role": "user", "content": "Tell me a long story."}]
# About 3 s alone on the tiny model: long enough to be cancelled, or to be running when looked at.
LONG = {"model": "tiny", "messages": QUESTION, "max_tokens": 2000, "temperature": 0}


@pytest.fixture(scope="module")
def serving(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(
        tmp_path_factory.mktemp("serving"),
        OPENFT_BASE_MODELS=f"tiny={tiny_dir}",
        OPENFT_API_KEYS="sk-a:org-a,sk-b:org-b",
        OPENFT_PRELOAD_MODELS="tiny",
        OPENFT_MAX_BATCH_SIZE="4",
        OPENFT_MAX_REQUESTS_IN_FLIGHT_PER_ORGANIZATION=str(PER_ORGANIZATION),
        OPENFT_MAX_REQUESTS_IN_FLIGHT=str(PER_ORGANIZATION + 1),
        OPENFT_MAX_TOKENS_PER_REQUEST="4096",
        OPENFT_EMBEDDED_WORKER="false",
    )
    wait_until(lambda: tiny_stats(live).get("state") == "ready", timeout=60, what="the preloaded model")
    yield live
    live.stop()


def health(server: LiveServer) -> dict[str, Any]:
    return httpx.get(server.base_url.removesuffix("/v1") + "/health", timeout=10).json()


def tiny_stats(server: LiveServer) -> dict[str, Any]:
    stats: dict[str, Any] = health(server).get("models", {}).get("tiny", {})
    return stats


def idle(server: LiveServer) -> bool:
    stats = tiny_stats(server)
    return health(server)["requests_in_flight"] == 0 and stats["running"] == 0 and stats["waiting"] == 0


def test_preloaded_model_is_reported_ready(serving: LiveServer) -> None:
    stats = tiny_stats(serving)
    assert stats["state"] == "ready" and stats["loaded_adapters"] == []


def test_n_choices_come_from_one_prefill(serving: LiveServer) -> None:
    client = serving.client("sk-a")
    before = tiny_stats(serving)["prefilled_tokens"]
    completion = client.chat.completions.create(model="tiny", messages=QUESTION, n=3, max_tokens=5, seed=1)
    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    assert completion.usage is not None
    assert tiny_stats(serving)["prefilled_tokens"] - before == completion.usage.prompt_tokens


async def until(predicate: Any, what: str, timeout: float = 60) -> None:
    """Polls `predicate` without blocking the test's event loop, failing after `timeout` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _busy_organization(serving: LiveServer) -> None:
    """While org-a has PER_ORGANIZATION long non-streaming chats in flight: org-b's chat is
    answered, other routes and auth answer, org-a's next chat and the total bound get 429, and
    when org-a's clients go away every sequence leaves the batch."""
    base = serving.base_url
    async with (
        httpx.AsyncClient(base_url=base, headers={"Authorization": "Bearer sk-a"}, timeout=300) as a,
        httpx.AsyncClient(base_url=base, headers={"Authorization": "Bearer sk-b"}, timeout=60) as b,
    ):
        flood = [asyncio.create_task(a.post("/chat/completions", json=LONG)) for _ in range(PER_ORGANIZATION)]
        await until(
            lambda: (s := tiny_stats(serving))["running"] == 4 and s["waiting"] == PER_ORGANIZATION - 4,
            "org-a's chats to fill the batch and the queue",
        )

        models = await b.get("/models")
        assert models.status_code == 200 and "tiny" in [m["id"] for m in models.json()["data"]]
        unauthorized = await b.get("/models", headers={"Authorization": "Bearer sk-nobody"})
        assert unauthorized.status_code == 401

        over = await a.post("/chat/completions", json=LONG)
        assert over.status_code == 429 and over.headers["retry-after"] == "1"
        assert over.json()["error"]["code"] == "rate_limit_exceeded"

        answered = await b.post("/chat/completions", json={**LONG, "max_tokens": 8})
        assert answered.status_code == 200, answered.text
        assert answered.json()["choices"][0]["finish_reason"] == "length"
        # org-b's one chat did not wait for org-a's queue: at most one batch of org-a's has finished
        assert health(serving)["requests_in_flight"] >= PER_ORGANIZATION - 4
        assert tiny_stats(serving)["preempted"] >= 1

        b_first = asyncio.create_task(b.post("/chat/completions", json=LONG))
        await until(lambda: health(serving)["requests_in_flight"] == PER_ORGANIZATION + 1, "org-b's long chat")
        total = await b.post("/chat/completions", json=LONG)
        assert total.status_code == 429 and "limit" in total.json()["error"]["message"]

        for task in [*flood, b_first]:
            task.cancel()
        await asyncio.gather(*flood, b_first, return_exceptions=True)


def test_one_organization_cannot_starve_another_or_the_api(serving: LiveServer) -> None:
    asyncio.run(_busy_organization(serving))
    wait_until(lambda: idle(serving), timeout=60, what="the cancelled chats to leave the batch")


def test_a_stream_that_is_closed_frees_its_row(serving: LiveServer) -> None:
    client = serving.client("sk-a")
    cancelled = tiny_stats(serving)["cancelled"]
    with client.chat.completions.create(**LONG, stream=True) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        assert tiny_stats(serving)["running"] == 1
    wait_until(lambda: idle(serving), timeout=30, what="the closed stream to leave the batch")
    assert tiny_stats(serving)["cancelled"] == cancelled + 1


def test_a_request_that_times_out_frees_its_row(serving: LiveServer) -> None:
    client = serving.client("sk-a").with_options(timeout=1.0)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(**LONG)
    wait_until(lambda: idle(serving), timeout=30, what="the abandoned request to leave the batch")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n": 129}, "n"),
        ({"n": 16, "max_tokens": 1000}, "n"),
        ({"max_completion_tokens": 1000, "n": 5}, "n"),
    ],
)
def test_requests_asking_too_much_are_400_with_param(serving: LiveServer, body: dict[str, Any], param: str) -> None:
    client = serving.client("sk-a")
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="tiny", messages=QUESTION, **body)
    assert raised.value.param == param
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model="tiny", prompt=["a"] * 5, max_tokens=1000)
    assert raised.value.param == "max_tokens" and raised.value.code == "too_many_tokens"


def test_completion_prompt_lists_are_bounded(serving: LiveServer) -> None:
    client = serving.client("sk-a")
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model="tiny", prompt=["a"] * 65, max_tokens=1)
    assert raised.value.param == "prompt"
    several = client.completions.create(model="tiny", prompt=["a", "b", "c"], max_tokens=2, n=2)
    assert [choice.index for choice in several.choices] == list(range(6))


async def _leave_before_the_first_token(serving: LiveServer) -> None:
    base = serving.base_url
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": "Bearer sk-a"}, timeout=300) as a:
        batch = [asyncio.create_task(a.post("/chat/completions", json=LONG)) for _ in range(4)]
        await until(lambda: tiny_stats(serving)["running"] == 4, "org-a's chats to fill the batch")
        with pytest.raises(httpx.ReadTimeout):  # queued behind the batch: no first token within 1 s
            await a.post("/chat/completions", json={**LONG, "stream": True}, timeout=1.0)
        for task in batch:
            task.cancel()
        await asyncio.gather(*batch, return_exceptions=True)


def test_a_stream_left_before_its_first_token_gives_its_place_back(serving: LiveServer) -> None:
    asyncio.run(_leave_before_the_first_token(serving))
    wait_until(lambda: idle(serving), timeout=60, what="every place in flight to be given back")


def test_health_names_no_organization(serving: LiveServer) -> None:
    stats = tiny_stats(serving)
    assert "organizations_decoding" in stats and "org-a" not in str(health(serving))

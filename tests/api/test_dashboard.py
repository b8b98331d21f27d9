"""The dashboard in a real browser: headless Chromium (Debian's `chromium`), driven by Playwright,
against a live server with two organizations' keys, training the tiny model for real.

The tests run in order and share what they made (`journey`): the first one signs in, uploads,
checks and starts the job the later ones look at. With `OPENFT_SCREENSHOTS_DIR` set they save
screenshots of the main pages there (docs/screenshots/ holds the ones the README shows)."""

from __future__ import annotations

import os
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import (
    OTHER_ORGANIZATION_KEY,
    LiveServer,
    chat_examples,
    require_component,
    wait_for_job,
)

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # reported by the `browser` fixture, with how to install it
    sync_playwright = None

CHROMIUM = os.environ.get("OPENFT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = os.environ.get("OPENFT_SCREENSHOTS_DIR")
KEY = "sk-test"  # the organization `personal` of TRAINING_ENV
TRAINING_TIMEOUT_MS = 180_000
pytestmark = pytest.mark.usefixtures("training_server")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_component(
        sync_playwright is not None and Path(CHROMIUM).is_file(),
        f"the dashboard tests need Playwright for Python (`pip install -e '.[dev]'`) and Chromium at {CHROMIUM} "
        "(`apt-get install chromium`, or OPENFT_CHROMIUM=/path/to/chromium); no browser is downloaded",
    )
    assert sync_playwright is not None
    expect.set_options(timeout=30_000)  # a busy 2-core CI machine; waits end as soon as the page is there
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser profile per test (nothing remembered); any uncaught script error fails it."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(30_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on("dialog", lambda dialog: dialog.accept())  # the "delete?" confirmations
    yield tab
    context.close()
    assert not errors, f"script errors in the dashboard: {errors}"


@pytest.fixture(scope="module")
def client(training_server: LiveServer) -> openai.OpenAI:
    return training_server.client(KEY)


@pytest.fixture(scope="module")
def journey() -> dict[str, str]:
    """Ids the tests pass on: the file, job and model the first test made."""
    return {}


def origin(server: LiveServer) -> str:
    return server.base_url.removesuffix("/v1")


def sign_in(page: Any, server: LiveServer, key: str) -> None:
    page.goto(origin(server) + "/")  # redirects to /dashboard/
    page.fill("#api-key", key)
    page.click("#login")
    expect(page.locator("#jobs")).to_be_visible()


def screenshot(page: Any, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


def points(page: Any) -> int:
    return int(page.locator("#loss-chart").get_attribute("data-points") or 0)


def test_sign_in_check_a_file_start_a_job_and_watch_its_chart_grow(
    page: Any, training_server: LiveServer, tmp_path: Path, journey: dict[str, str]
) -> None:
    page.goto(origin(training_server) + "/dashboard/")
    page.fill("#api-key", "sk-wrong")
    page.click("#login")
    expect(page.locator("#login-error")).to_contain_text("Incorrect API key")
    sign_in(page, training_server, KEY)

    page.click("nav a[data-page=new]")
    page.select_option("#model", "tiny")  # its tokenizer counts; its few real steps time the estimate
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(chat_examples(12) + b'{"messages": [{"role": "user", "content": "no answer"}]}\n{oops\n')
    page.set_input_files("#training-upload", str(broken))
    report = page.locator(".report").first
    expect(report).to_have_attribute("data-errors", "2")
    expect(page.locator("#check-errors")).to_contain_text("13")  # the errors by line
    expect(page.locator("#check-errors")).to_contain_text("14")
    expect(page.locator("#start")).to_be_disabled()
    screenshot(page, "new-job-errors")

    good = tmp_path / "train.jsonl"
    good.write_bytes(chat_examples(16))
    page.set_input_files("#training-upload", str(good))
    expect(page.locator(".report").first).to_have_attribute("data-errors", "0")
    report = page.locator(".report").first
    expect(report).to_contain_text("No errors")
    expect(report).to_contain_text("Examples16")
    expect(report).to_contain_text("tokens/s on this machine")  # the expected training time
    journey["file"] = page.locator("#training-file").input_value()
    validation = tmp_path / "valid.jsonl"
    validation.write_bytes(chat_examples(3, offset=50))  # a validation file needs one example, not ten
    page.set_input_files("#validation-upload", str(validation))
    expect(page.locator(".report")).to_have_count(2)
    expect(page.locator(".report").nth(1)).to_have_attribute("data-errors", "0")
    expect(page.locator(".report").nth(1)).to_contain_text("Examples3")
    page.fill("#n-epochs", "4")
    page.fill("#batch-size", "1")
    page.fill("#suffix", "dash")
    page.locator("#n-epochs").dispatch_event("change")  # the report counts the epochs asked for
    expect(page.locator(".report").first).to_contain_text("over 4 epoch(s)")
    screenshot(page, "new-job")
    page.click("#start")

    page.wait_for_url("**/dashboard/#/jobs/ftjob-*")
    journey["job"] = page.url.rsplit("/", 1)[-1]
    expect(page.locator("#settings")).to_contain_text("n epochs4")
    # Live: the chart gains points while the job trains, without reloading the page.
    page.wait_for_function(
        "() => Number(document.querySelector('#loss-chart').dataset.points) > 0", timeout=TRAINING_TIMEOUT_MS
    )
    first = points(page)
    page.wait_for_function(
        "n => Number(document.querySelector('#loss-chart').dataset.points) > n", arg=first, timeout=60_000
    )
    assert points(page) > first
    expect(page.locator("#events")).to_contain_text("Step ")

    expect(page.locator("h1")).to_have_attribute("data-status", "succeeded", timeout=TRAINING_TIMEOUT_MS)
    assert points(page) == 4 * 16  # every step, batch size 1
    expect(page.locator("#loss-chart .u-legend")).to_contain_text("validation loss")
    expect(page.locator("#checkpoints tbody tr")).not_to_have_count(0)
    journey["model"] = page.locator("#fine-tuned-model").inner_text()
    assert journey["model"].startswith("ft:tiny:personal:dash:")
    with page.expect_download() as downloaded:
        page.click("#results .result-file")
    csv = Path(downloaded.value.path()).read_text()
    assert csv.startswith("step,") and len(csv.splitlines()) == 4 * 16 + 1  # decoded, not base64
    screenshot(page, "job")


def test_cancel_a_job_from_its_page(page: Any, training_server: LiveServer, client: openai.OpenAI) -> None:
    training = client.files.create(file=("cancel.jsonl", chat_examples(12)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=training.id, model="tiny", hyperparameters={"n_epochs": 50})
    sign_in(page, training_server, KEY)
    page.goto(origin(training_server) + f"/dashboard/#/jobs/{job.id}")
    expect(page.locator("#cancel")).to_be_enabled()
    page.click("#cancel")
    expect(page.locator("h1")).to_have_attribute("data-status", "cancelled")
    expect(page.locator("#cancel")).to_be_disabled()
    expect(page.locator("#events")).to_contain_text("Fine-tuning job cancelled")
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"


def test_jobs_page_lists_and_filters_by_status(page: Any, training_server: LiveServer, journey: dict[str, str]) -> None:
    sign_in(page, training_server, KEY)
    rows = page.locator("#jobs tbody tr[data-job]")
    expect(rows.first).to_be_visible()
    assert rows.count() >= 2
    screenshot(page, "jobs")
    page.select_option("#status-filter", "cancelled")
    expect(page.locator("#jobs tbody tr[data-job] .status.succeeded")).to_have_count(0)
    expect(page.locator("#jobs tbody tr[data-job] .status.cancelled")).not_to_have_count(0)
    if "job" in journey:
        expect(page.locator(f"#jobs tr[data-job='{journey['job']}']")).to_have_count(0)
        page.select_option("#status-filter", "succeeded")
        expect(page.locator(f"#jobs tr[data-job='{journey['job']}']")).to_be_visible()


def test_playground_streams_the_same_prompt_side_by_side(
    page: Any, training_server: LiveServer, client: openai.OpenAI, journey: dict[str, str]
) -> None:
    model = journey.get("model") or trained_model(client)
    sign_in(page, training_server, KEY)
    page.goto(origin(training_server) + f"/dashboard/#/playground?model=tiny&model={model}")
    expect(page.locator(".pane")).to_have_count(2)
    page.fill("#max-tokens", "24")
    page.fill("#temperature", "1")
    page.fill("#prompt", "What is 3 plus 3?")
    page.click("#send")
    answers = page.locator(".turn.assistant")
    expect(answers).to_have_count(2)
    for index in range(2):
        expect(answers.nth(index)).to_have_attribute("data-state", "done")
        # The text came in as a stream: many chunks, each appended as it arrived.
        assert int(answers.nth(index).get_attribute("data-deltas") or 0) > 1
        assert answers.nth(index).text_content()  # the tiny model's words are random, maybe only newlines
    assert "error" not in (answers.first.get_attribute("class") or "")
    screenshot(page, "playground")


def test_files_and_models_pages_inspect_and_delete(
    page: Any, training_server: LiveServer, client: openai.OpenAI, journey: dict[str, str]
) -> None:
    spare = client.files.create(file=("spare.jsonl", chat_examples(10)), purpose="fine-tune")
    sign_in(page, training_server, KEY)
    page.click("nav a[data-page=files]")
    row = page.locator(f"#files tr[data-file='{spare.id}']")
    expect(row).to_contain_text("spare.jsonl")
    row.locator("a").click()
    expect(page.locator("#file-detail pre")).to_contain_text("What is 0 plus 0?")
    row.locator("button.delete").click()
    expect(row).to_have_count(0)
    assert spare.id not in [f.id for f in client.files.list()]

    model = journey.get("model") or trained_model(client)
    page.click("nav a[data-page=models]")
    expect(page.locator("#models tr[data-model='tiny']")).to_be_visible()
    expect(page.locator(f"#models tr[data-model='{model}']")).to_contain_text("fine-tuned")
    screenshot(page, "models")


def test_another_organization_sees_none_of_it(
    page: Any, training_server: LiveServer, client: openai.OpenAI, journey: dict[str, str]
) -> None:
    mine_jobs = [job.id for job in client.fine_tuning.jobs.list()]
    mine_files = [file.id for file in client.files.list()]
    mine_models = [model.id for model in client.models.list() if model.id.startswith("ft:")]
    assert mine_jobs and mine_files and mine_models
    sign_in(page, training_server, OTHER_ORGANIZATION_KEY)
    expect(page.locator("#jobs tbody")).to_contain_text("No jobs yet.")
    page.click("nav a[data-page=files]")
    expect(page.locator("#files tbody")).to_contain_text("No files yet.")
    page.click("nav a[data-page=models]")
    expect(page.locator("#models tr[data-model='tiny']")).to_be_visible()
    page.click("nav a[data-page=new]")
    expect(page.locator("#training-file option")).to_have_count(1)  # "choose a file…" only
    html = page.content()
    for own in (*mine_jobs, *mine_files, *mine_models):
        assert own not in html
    page.goto(origin(training_server) + f"/dashboard/#/jobs/{mine_jobs[0]}")
    expect(page.locator("#banner")).to_contain_text("No such")
    page.goto(origin(training_server) + f"/dashboard/#/files?id={mine_files[0]}")
    expect(page.locator("#banner")).to_contain_text("No such File object")
    # And signing out forgets the key: the login form again.
    page.click("#logout")
    expect(page.locator("#api-key")).to_be_visible()


def test_the_check_route_is_authorized_like_the_file(training_server: LiveServer, client: openai.OpenAI) -> None:
    """`GET /v1/files/{id}/check`, which the new-job page shows, without a browser."""
    few = client.files.create(file=("few.jsonl", chat_examples(3)), purpose="fine-tune")
    with training_server.http(KEY) as http:
        as_training = http.get(f"/files/{few.id}/check", params={"model": "tiny", "estimate": "false"}).json()
        as_validation = http.get(f"/files/{few.id}/check", params={"model": "tiny", "validation": "true"}).json()
        unknown_model = http.get(f"/files/{few.id}/check", params={"model": "nope"})
    assert as_training["object"] == "file.check" and as_training["filename"] == "few.jsonl"
    assert [error["code"] for error in as_training["errors"]] == ["invalid_n_examples"]
    assert as_training["n_examples"] == 3 and as_training["tokens"]["min"] > 0
    assert as_validation["n_errors"] == 0 and as_validation["estimated_seconds"] is None
    assert unknown_model.status_code == 404 and unknown_model.json()["error"]["code"] == "model_not_found"
    with training_server.http(OTHER_ORGANIZATION_KEY) as http:
        theirs = http.get(f"/files/{few.id}/check", params={"model": "tiny"})
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "not_found"


def trained_model(client: openai.OpenAI) -> str:
    """When a test runs alone: a fine-tuned model trained through the API."""
    training = client.files.create(file=("alone.jsonl", chat_examples(10)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=training.id, model="tiny", hyperparameters={"n_epochs": 1})
    model = wait_for_job(client, job.id, ("succeeded",)).fine_tuned_model
    assert isinstance(model, str)
    return model


def test_dashboard_assets_are_package_data() -> None:
    """Every file the pages load is inside the package (works offline; `pip install` ships it)."""
    from openft.api.web import DASHBOARD_DIR

    index = (DASHBOARD_DIR / "index.html").read_text()
    for asset in ("vendor/uPlot.min.css", "style.css", "vendor/uPlot.iife.min.js", "app.js"):
        assert asset in index and (DASHBOARD_DIR / asset).is_file(), asset
    assert "http" not in index.replace("http-equiv", "")  # nothing fetched from elsewhere
    assert (DASHBOARD_DIR / "vendor" / "uPlot.LICENSE").read_text().startswith("The MIT License")
    package = DASHBOARD_DIR.parents[1]
    globs = tomllib.loads((package.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for path in DASHBOARD_DIR.rglob("*"):
        if path.is_file():
            relative = path.relative_to(package)
            assert any(relative.match(glob) for glob in globs["openft"]), f"{relative} is not package data"

"""API keys, organizations, and the loopback-only rule of single-user mode."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import openai
import pytest

from tests.conftest import REPO_ROOT, LiveServer, start_server

KEYS = "sk-alice:acme,sk-bob:globex"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("keyed"), OPENFT_API_KEYS=KEYS)
    yield live
    live.stop()


def test_missing_and_wrong_keys_are_401(keyed_server: LiveServer) -> None:
    with keyed_server.http() as http:
        http.headers.pop("Authorization")
        missing = http.get("/files")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"
    assert missing.headers["x-request-id"].startswith("req_")
    with pytest.raises(openai.AuthenticationError) as raised:
        keyed_server.client("sk-mallory").files.list()
    assert raised.value.code == "invalid_api_key"
    assert "sk-mallory" not in str(raised.value.body)
    with pytest.raises(openai.AuthenticationError):
        keyed_server.client("sk-mallory").models.list()


def test_objects_belong_to_their_organization(keyed_server: LiveServer) -> None:
    alice, bob = keyed_server.client("sk-alice"), keyed_server.client("sk-bob")
    secret = alice.files.create(file=("secret.jsonl", b"{}\n"), purpose="fine-tune")
    upload = alice.uploads.create(bytes=1, filename="u", mime_type="text/plain", purpose="user_data")

    for call in (bob.files.retrieve, bob.files.content, bob.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(secret.id)
    with pytest.raises(openai.NotFoundError):
        bob.uploads.parts.create(upload.id, data=b"x")
    with pytest.raises(openai.NotFoundError):
        bob.uploads.cancel(upload.id)
    assert secret.id not in [f.id for f in bob.files.list()]
    with pytest.raises(openai.BadRequestError):  # another organization's id is no cursor either
        bob.files.list(after=secret.id)

    assert secret.id in [f.id for f in alice.files.list()]
    assert alice.files.content(secret.id).content == b"{}\n"


def test_single_user_refuses_a_public_address() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPENFT_")}
    result = subprocess.run(
        [sys.executable, "-m", "openft", "serve", "--host", "0.0.0.0", "--port", "1"],
        cwd=REPO_ROOT,
        env={**env, "OPENFT_DATA_DIR": "/nonexistent/never-created"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "OPENFT_API_KEYS" in result.stderr


def test_single_user_accepts_any_bearer(server: LiveServer) -> None:
    assert server.client("anything-at-all").models.list().data


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"host": "attacker.example:8000"}, "invalid_host"),  # DNS rebinding
        ({"host": "127.0.0.1.nip.io"}, "invalid_host"),
        ({"origin": "http://evil.example"}, "cross_origin_request"),  # CSRF from another site's page
        ({"origin": "null"}, "cross_origin_request"),
    ],
)
def test_single_user_refuses_other_hosts_and_sites(server: LiveServer, headers: dict[str, str], code: str) -> None:
    with server.http() as http:
        response = http.get("/files", headers=headers)
        assert response.status_code == 403 and response.json()["error"]["code"] == code
        upload = http.post(
            "/files", headers=headers, files={"file": ("x.jsonl", b"{}\n")}, data={"purpose": "fine-tune"}
        )
        assert upload.status_code == 403


def test_single_user_answers_loopback_hosts_and_origins(server: LiveServer) -> None:
    port = server.base_url.split(":")[-1].split("/")[0]
    with server.http() as http:
        for headers in ({"host": f"localhost:{port}"}, {"origin": f"http://127.0.0.1:{port}"}, {"host": "[::1]"}):
            assert http.get("/files", headers=headers).status_code == 200, headers


def test_keyed_servers_take_any_host(keyed_server: LiveServer) -> None:
    with keyed_server.http("sk-alice") as http:
        assert http.get("/files", headers={"host": "openft.example.com"}).status_code == 200

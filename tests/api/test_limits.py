"""Request limits, against the live server with small ones: headers bounded in bytes and number
(431), string fields bounded (400 naming the field), and clients that send too slowly cut off
(408) without a temporary file left behind or anyone else kept waiting. Raw sockets, as a client
would send the bytes (the SDKs can't send them this badly)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, chat_examples, start_server, wait_until

MAX_HEADER_BYTES = 8192
MAX_HEADER_COUNT = 30
HEADER_TIMEOUT = 1.5
READ_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(
        tmp_path_factory.mktemp("limits"),
        OPENFT_MAX_HEADER_BYTES=str(MAX_HEADER_BYTES),
        OPENFT_MAX_HEADER_COUNT=str(MAX_HEADER_COUNT),
        OPENFT_REQUEST_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        OPENFT_REQUEST_READ_TIMEOUT_SECONDS=str(READ_TIMEOUT),
    )
    yield live
    live.stop()


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, Any]:
        document = json.loads(self.body)
        assert set(document) == {"error"} and set(document["error"]) == {"message", "type", "param", "code"}
        return dict(document["error"])


def address(server: LiveServer) -> tuple[str, int]:
    url = httpx.URL(server.base_url)
    assert url.host and url.port
    return url.host, url.port


def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(address(server), timeout=10)


class NoAnswer(AssertionError):
    pass


def read_response(sock: socket.socket, timeout: float) -> RawResponse | None:
    """Reads one response: up to its Content-Length, or until the server closes the connection
    (every refusal says `connection: close`), within `timeout` seconds (else NoAnswer); None when
    the server closed the connection without a word."""
    deadline = time.monotonic() + timeout
    received = b""
    while (response := _parse(received)) is None or len(response.body) < int(response.headers["content-length"]):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            raise NoAnswer(f"no answer within {timeout} s; received {received[:200]!r}") from None
        if not chunk:
            break
        received += chunk
    return _parse(received)


def _parse(received: bytes) -> RawResponse | None:
    if b"\r\n\r\n" not in received:
        return None
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return RawResponse(int(status_line.split()[1]), headers, body)


def send_and_read(server: LiveServer, data: bytes, timeout: float = 10) -> RawResponse:
    with connect(server) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)  # refused mid-send: the answer is still there to read
        response = read_response(sock, timeout)
    assert response is not None, "the server closed the connection without answering"
    return response


def request_head(*headers: str, method: str = "GET", path: str = "/v1/models") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def server_rss_mib(server: LiveServer) -> float:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc")


def temporaries(server: LiveServer) -> list[Path]:
    return [path for path in (server.data_dir / "blobs").rglob(".tmp-*")]


def list_models_promptly(server: LiveServer) -> float:
    started = time.monotonic()
    with server.http() as http:
        response = http.get("/models", timeout=READ_TIMEOUT)
    assert response.status_code == 200
    return time.monotonic() - started


# Headers


def test_a_huge_header_is_431_with_an_openai_error(limited: LiveServer) -> None:
    response = send_and_read(limited, request_head("x-big: " + "a" * 10_000_000))
    assert response.status == 431
    assert response.headers["connection"] == "close"
    assert response.headers["x-request-id"].startswith("req_")
    assert response.error() == {
        "message": f"The request line and headers are larger than {MAX_HEADER_BYTES} bytes.",
        "type": "invalid_request_error",
        "param": None,
        "code": "headers_too_large",
    }
    # As an ordinary client sees it: headers that arrive whole, just over the limit
    with limited.http() as http:
        over = http.get("/models", headers={"x-big": "a" * MAX_HEADER_BYTES})
        assert over.status_code == 431 and over.json()["error"]["code"] == "headers_too_large"
        assert http.get("/models", headers={"x-fits": "a" * (MAX_HEADER_BYTES // 2)}).status_code == 200


def test_a_long_url_counts_as_header_bytes(limited: LiveServer) -> None:
    response = send_and_read(limited, request_head(path="/v1/models?x=" + "a" * (2 * MAX_HEADER_BYTES)))
    assert response.status == 431 and response.error()["code"] == "headers_too_large"


def test_too_many_headers_is_431(limited: LiveServer) -> None:
    response = send_and_read(limited, request_head(*(f"x-h{i}: 1" for i in range(MAX_HEADER_COUNT + 1))))
    assert response.status == 431
    error = response.error()
    assert error["code"] == "too_many_headers" and error["param"] is None
    assert f"more than {MAX_HEADER_COUNT} header fields" in error["message"]
    with limited.http() as http:  # httpx's own few headers plus these stay within the count
        assert http.get("/models", headers={f"x-h{i}": "1" for i in range(10)}).status_code == 200


def test_endless_chunked_trailers_are_431(limited: LiveServer) -> None:
    head = request_head(
        "Authorization: Bearer sk-test",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
        method="POST",
        path="/v1/uploads",
    )
    response = send_and_read(limited, head + b"2\r\n{}\r\n0\r\nx-trailer: " + b"a" * 1_000_000)
    assert response.status == 431 and response.error()["code"] == "headers_too_large"


def test_a_flood_of_huge_headers_does_not_grow_memory(limited: LiveServer) -> None:
    """16 clients at once, each sending 10 MB of one header (160 MB in all): without the limit,
    httptools buffers each whole and the server grows by about 100 MiB (measured: 395 -> 512 MiB
    for 10 of them); with it, a refusal costs one read buffer."""
    before = server_rss_mib(limited)
    statuses: list[int] = []

    def flood() -> None:
        statuses.append(send_and_read(limited, request_head("x-big: " + "a" * 10_000_000)).status)

    threads = [threading.Thread(target=flood) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert statuses == [431] * 16
    assert server_rss_mib(limited) - before < 32
    list_models_promptly(limited)


def test_malformed_http_is_400_with_an_openai_error(limited: LiveServer) -> None:
    response = send_and_read(limited, b"NOT HTTP AT ALL\r\n\r\n")
    assert response.status == 400 and response.error()["code"] == "invalid_http"


def test_an_upgrade_is_answered_as_plain_http_and_closed(limited: LiveServer) -> None:
    response = send_and_read(
        limited, request_head("Authorization: Bearer sk-test", "Connection: Upgrade", "Upgrade: websocket")
    )
    assert response.status == 200 and json.loads(response.body)["object"] == "list"


# String fields


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (
            "/uploads",
            {"filename": "a" * 513, "purpose": "fine-tune", "bytes": 1, "mime_type": "text/plain"},
            "filename",
        ),
        ("/uploads", {"filename": "a.jsonl", "purpose": "fine-tune", "bytes": 1, "mime_type": "t" * 256}, "mime_type"),
        ("/uploads/upload_x/complete", {"part_ids": ["part_1", "p" * 65]}, "part_ids.1"),
        ("/fine_tuning/jobs", {"model": "m" * 1025, "training_file": "file-x"}, "model"),
        ("/fine_tuning/jobs", {"model": "smollm2-135m-instruct", "training_file": "f" * 65}, "training_file"),
        ("/fine_tuning/jobs", {"model": "tiny", "training_file": "file-x", "suffix": "s" * 65}, "suffix"),
        (
            "/fine_tuning/jobs",
            {
                "model": "tiny",
                "training_file": "file-x",
                "integrations": [{"type": "wandb", "wandb": {"project": "p" * 257}}],
            },
            "integrations.0.wandb.project",
        ),
        ("/chat/completions", {"model": "m" * 1025, "messages": [{"role": "user", "content": "hi"}]}, "model"),
        (
            "/chat/completions",
            {"model": "x", "messages": [{"role": "user", "content": "hi", "name": "n" * 257}]},
            "messages.0.name",
        ),
    ],
)
def test_an_overlong_json_string_is_400_naming_it(
    limited: LiveServer, path: str, body: dict[str, Any], param: str
) -> None:
    with limited.http() as http:
        response = http.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_value", param)
    assert len(response.content) < 2000  # the value isn't echoed whole


def multipart(fields: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> bytes:
    """A multipart/form-data body of (name, filename, value) parts."""
    parts = []
    for name, filename, value in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        (
            [("purpose", None, b"f" * (64 * 1024 + 1)), ("file", "t.jsonl", chat_examples(10))],
            "purpose",
            "invalid_value",
        ),
        ([("purpose", None, b"fine-tune"), ("file", "n" * 513 + ".jsonl", chat_examples(10))], "file", "invalid_value"),
        ([("purpose", None, b"fine-tune"), ("file", "t" * 20_000, b"x")], None, "invalid_multipart"),
    ],
    ids=["field-value", "filename", "part-headers"],
)
def test_an_overlong_form_field_is_400(
    limited: LiveServer, fields: list[tuple[str, str | None, bytes]], param: str | None, code: str
) -> None:
    with limited.http() as http:
        response = http.post(
            "/files", content=multipart(fields), headers={"content-type": "multipart/form-data; boundary=b0undary"}
        )
        assert response.status_code == 400, response.text
        assert (response.json()["error"]["param"], response.json()["error"]["code"]) == (param, code)
        assert http.get("/files").json()["data"] == []
    wait_until(lambda: not temporaries(limited), timeout=5, what="temporary files to go")


# Slow clients


def stalled_upload(limited: LiveServer, where: str) -> tuple[socket.socket, bytes]:
    """A request whose body promises a megabyte and delivers `where` part of it."""
    content = chat_examples(200)
    if where == "upload-part":
        with limited.http() as http:
            created = http.post(
                "/uploads",
                json={"filename": "t.jsonl", "purpose": "fine-tune", "bytes": 10**6, "mime_type": "text/plain"},
            )
        path, fields = f"/v1/uploads/{created.json()['id']}/parts", [("data", "blob", content)]
    else:
        path, fields = "/v1/files", [("purpose", None, b"fine-tune"), ("file", "t.jsonl", content)]
    body = multipart(fields)
    # The purpose field and nothing more, or into the file's bytes
    sent = body[: body.index(b"--b0undary", 1)] if where == "before-file" else body[: len(body) // 2]
    head = request_head(
        "Authorization: Bearer sk-test",
        "Content-Type: multipart/form-data; boundary=b0undary",
        f"Content-Length: {10**6}",
        method="POST",
        path=path,
    )
    sock = connect(limited)
    sock.sendall(head + sent)
    return sock, sent


def path_of(where: str) -> str:
    return "/v1/uploads/" if where == "upload-part" else "/v1/files"


@pytest.mark.parametrize("where", ["mid-file", "before-file", "upload-part"])
def test_a_stalled_body_is_cut_off_and_its_upload_discarded(limited: LiveServer, where: str) -> None:
    started = time.monotonic()
    sock, _ = stalled_upload(limited, where)
    with sock:
        if where != "before-file":  # the file is being received: its temporary exists
            wait_until(lambda: temporaries(limited), timeout=5, what="the upload's temporary file")
        # While it stalls, everyone else is served at once
        assert list_models_promptly(limited) < READ_TIMEOUT
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(1)  # and the stalled client hasn't been answered yet
        response = read_response(sock, READ_TIMEOUT + 10)
    elapsed = time.monotonic() - started
    assert response is not None and response.status == 408
    error = response.error()
    assert (error["code"], error["param"]) == ("request_timeout", None)
    assert f"nothing arrived for {READ_TIMEOUT:g} seconds" in error["message"]
    assert READ_TIMEOUT * 0.9 <= elapsed < READ_TIMEOUT + 5
    request_id = response.headers["x-request-id"]  # the app's id for the request: its log line says it went away
    wait_until(
        lambda: f"went away during POST {path_of(where)}" in limited.log() and request_id in limited.log(),
        timeout=5,
        what="the app's log line",
    )
    wait_until(lambda: not temporaries(limited), timeout=5, what="the partial upload's temporary file to go")
    with limited.http() as http:
        assert http.get("/files").json()["data"] == []


def test_a_stalled_json_body_is_408(limited: LiveServer) -> None:
    head = request_head(
        "Authorization: Bearer sk-test",
        "Content-Type: application/json",
        "Content-Length: 100",
        method="POST",
        path="/v1/uploads",
    )
    response = send_and_read(limited, head + b'{"filename": "a', timeout=READ_TIMEOUT + 10)
    assert response.status == 408 and response.error()["code"] == "request_timeout"


def test_trickled_headers_are_cut_off_after_the_header_timeout(limited: LiveServer) -> None:
    """One byte at a time, each well within any idle timeout: the header timeout is a total."""
    head = request_head("Authorization: Bearer sk-test", "x-slow: " + "a" * 1000)
    started = time.monotonic()
    with connect(limited) as sock:
        sock.sendall(head[:20])
        served_meanwhile = False
        response = None
        for byte in head[20:-4]:
            try:
                response = read_response(sock, 0.1)  # the pace of the trickle, and the wait for an answer
                break
            except NoAnswer:  # not yet: one more byte
                sock.sendall(bytes([byte]))
            if not served_meanwhile and time.monotonic() - started > HEADER_TIMEOUT / 3:
                assert list_models_promptly(limited) < HEADER_TIMEOUT
                served_meanwhile = True
            assert time.monotonic() - started < HEADER_TIMEOUT + 5, "never cut off"
    elapsed = time.monotonic() - started
    assert served_meanwhile
    assert response is not None and response.status == 408, response
    assert response.error()["code"] == "request_timeout"
    assert "did not arrive within" in response.error()["message"]
    assert HEADER_TIMEOUT * 0.9 <= elapsed < HEADER_TIMEOUT + 5


def test_a_silent_connection_is_closed(limited: LiveServer) -> None:
    started = time.monotonic()
    with connect(limited) as sock:
        assert read_response(sock, HEADER_TIMEOUT + 10) is None
    assert HEADER_TIMEOUT * 0.9 <= time.monotonic() - started < HEADER_TIMEOUT + 5


def test_a_slow_but_steady_upload_goes_through(limited: LiveServer) -> None:
    """Pauses shorter than the read timeout, adding up to more than twice it: idle time is bounded,
    not the total."""
    content = chat_examples(20)
    body = multipart([("purpose", None, b"fine-tune"), ("file", "steady.jsonl", content)])
    head = request_head(
        "Authorization: Bearer sk-test",
        "Content-Type: multipart/form-data; boundary=b0undary",
        f"Content-Length: {len(body)}",
        method="POST",
        path="/v1/files",
    )
    pieces = 6
    size = len(body) // pieces + 1
    started = time.monotonic()
    with connect(limited) as sock:
        sock.sendall(head)
        for offset in range(0, len(body), size):
            with pytest.raises(NoAnswer):  # the client's pace, the behaviour under test: nothing comes back meanwhile
                read_response(sock, READ_TIMEOUT / 2)
            sock.sendall(body[offset : offset + size])
        response = read_response(sock, 10)
    assert time.monotonic() - started > 2 * READ_TIMEOUT
    assert response is not None and response.status == 200, response
    created = json.loads(response.body)
    with limited.http() as http:
        assert http.get(f"/files/{created['id']}/content").content == content

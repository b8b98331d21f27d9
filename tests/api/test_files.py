"""The Files API through the official SDK against a live server."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types import FileDeleted, FileObject

from tests.conftest import LiveServer, wait_until

JSONL = b'{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}\n'


def test_upload_retrieve_and_read_back_byte_for_byte(client: openai.OpenAI, tmp_path: os.PathLike[str]) -> None:
    payload = JSONL * 3 + bytes(range(256))  # includes bytes that are not valid UTF-8
    path = os.path.join(tmp_path, "train.jsonl")
    with open(path, "wb") as handle:
        handle.write(payload)
    with open(path, "rb") as handle:
        created = client.files.create(file=handle, purpose="fine-tune")

    assert created.id.startswith("file-")
    assert created.object == "file"
    assert created.bytes == len(payload)
    assert created.filename == "train.jsonl"
    assert created.purpose == "fine-tune"
    assert created.status == "processed"
    assert created.expires_at is None
    assert created._request_id and created._request_id.startswith("req_")

    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).content == payload


def test_raw_bytes_get_the_sdk_default_filename(client: openai.OpenAI) -> None:
    created = client.files.create(file=JSONL, purpose="fine-tune")
    assert created.filename == "upload"


def test_raw_json_matches_the_sdk_types(server: LiveServer) -> None:
    with server.http() as http:
        response = http.post("/files", data={"purpose": "fine-tune"}, files={"file": ("a.jsonl", JSONL)})
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        created = FileObject.model_validate(response.json())
        listed = http.get("/files").json()
        assert listed["object"] == "list" and set(listed) == {
            "object",
            "data",
            "first_id",
            "last_id",
            "has_more",
        }
        for item in listed["data"]:
            FileObject.model_validate(item)
        deleted = FileDeleted.model_validate(http.delete(f"/files/{created.id}").json())
        assert deleted.deleted and deleted.id == created.id


def test_expires_after_sets_expires_at(client: openai.OpenAI) -> None:
    created = client.files.create(
        file=("x.jsonl", JSONL), purpose="fine-tune", expires_after={"anchor": "created_at", "seconds": 3600}
    )
    assert created.expires_at == created.created_at + 3600


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"purpose": "nonsense"}, "purpose"),
        ({"expires_after": {"anchor": "created_at", "seconds": 10}}, "expires_after.seconds"),
    ],
)
def test_bad_form_values_are_400_with_param(client: openai.OpenAI, extra: dict[str, object], param: str) -> None:
    arguments: dict[str, object] = {"file": ("x.jsonl", JSONL), "purpose": "fine-tune", **extra}
    with pytest.raises(openai.BadRequestError) as raised:
        client.files.create(**arguments)  # type: ignore[arg-type]
    assert raised.value.param == param
    assert raised.value.code == "invalid_value"


def test_missing_fields_are_400(server: LiveServer) -> None:
    with server.http() as http:
        no_purpose = http.post("/files", files={"file": ("a.jsonl", JSONL)})
        no_file = http.post("/files", data={"purpose": "fine-tune"}, files={"other": ("a", b"x")})
    assert no_purpose.status_code == 400
    assert no_purpose.json()["error"]["param"] == "purpose"
    assert no_file.status_code == 400
    assert no_file.json()["error"]["param"] == "file"


def test_pagination_both_ways(server: LiveServer) -> None:
    client = server.client()
    purpose = "user_data"
    uploaded = [client.files.create(file=(f"{i}.txt", b"%d" % i), purpose=purpose).id for i in range(5)]

    newest_first = [f.id for f in client.files.list(purpose=purpose, limit=2)]
    oldest_first = [f.id for f in client.files.list(purpose=purpose, limit=2, order="asc")]
    assert newest_first == uploaded[::-1]
    assert oldest_first == uploaded

    first_page = client.files.list(purpose=purpose, limit=2)
    assert first_page.has_more is True
    assert [f.id for f in first_page.data] == uploaded[::-1][:2]
    last_page = client.files.list(purpose=purpose, limit=2, after=uploaded[1])
    assert [f.id for f in last_page.data] == [uploaded[0]]
    assert last_page.has_more is False


def test_delete_then_404(client: openai.OpenAI) -> None:
    created = client.files.create(file=("d.jsonl", JSONL), purpose="fine-tune")
    assert client.files.delete(created.id).deleted is True
    for call in (client.files.retrieve, client.files.delete, client.files.content):
        with pytest.raises(openai.NotFoundError) as raised:
            call(created.id)
        assert raised.value.body == {
            "message": f"No such File object: {created.id}",
            "type": "invalid_request_error",
            "param": "id",
            "code": "not_found",
        }
    assert created.id not in [f.id for f in client.files.list()]


def test_unknown_route_and_wrong_method_get_error_bodies(server: LiveServer) -> None:
    with server.http() as http:
        unknown = http.get("/nothing/here")
        wrong_method = http.put("/files")
    assert unknown.status_code == 404
    assert unknown.json() == {
        "error": {
            "message": "Invalid URL (GET /v1/nothing/here)",
            "type": "invalid_request_error",
            "param": None,
            "code": "unknown_url",
        }
    }
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert unknown.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"3", b"null"])
def test_a_body_that_is_not_an_object_is_400_saying_so(server: LiveServer, body: bytes) -> None:
    with server.http() as http:
        response = http.post("/fine_tuning/jobs", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_value" and error["message"].startswith("The request body must be a JSON object")


def test_no_redirect_for_a_trailing_slash(server: LiveServer) -> None:
    with server.http() as http:
        response = http.get("/files/", headers={"host": "127.0.0.1"})
    assert response.status_code == 404 and "location" not in response.headers
    assert response.json()["error"]["code"] == "unknown_url"


def test_bad_query_parameter_is_400_not_422(server: LiveServer) -> None:
    with server.http() as http:
        response = http.get("/files", params={"limit": 0})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "limit"
    assert "detail" not in response.json()


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (
            "multipart/form-data; boundary=XyZ",
            b'--XyZ\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-t',
        ),
        ("multipart/form-data; boundary=XyZ", b"this is not multipart at all"),
        ("multipart/form-data", b"--XyZ--\r\n"),
        ("application/json", b'{"purpose": "fine-tune"}'),
    ],
)
def test_malformed_multipart_is_400(server: LiveServer, content_type: str, body: bytes) -> None:
    with server.http() as http:
        response = http.post("/files", content=body, headers={"content-type": content_type})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_multipart"


def test_lost_blob_is_a_bare_500(server: LiveServer) -> None:
    client = server.client()
    created = client.files.create(file=("lost.jsonl", JSONL), purpose="fine-tune")
    (server.data_dir / "blobs" / "files" / created.id).unlink()
    with pytest.raises(openai.InternalServerError) as raised:
        client.files.content(created.id)
    body = raised.value.body
    assert isinstance(body, dict)
    assert body["type"] == "server_error" and body["code"] == "server_error"
    assert str(server.data_dir) not in body["message"] and "Traceback" not in body["message"]
    assert raised.value.request_id and raised.value.request_id.startswith("req_")


class _Generated(io.RawIOBase):
    """A large file-like body that never exists in the test's memory either."""

    def __init__(self, size: int) -> None:
        self.remaining = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self.remaining)
        buffer[:count] = b"x" * count
        self.remaining -= count
        return count


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_large_upload_streams_to_disk(server: LiveServer) -> None:
    size = 300 * 1024 * 1024
    before = _peak_rss_kib(server.process.pid)
    with server.http() as http:
        response = http.post(
            "/files",
            data={"purpose": "user_data"},
            files={"file": ("big.bin", io.BufferedReader(_Generated(size), 1024 * 1024))},
        )
    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == size
    grown_mib = (_peak_rss_kib(server.process.pid) - before) / 1024
    assert grown_mib < 64, f"server peak memory grew by {grown_mib:.0f} MiB for a {size >> 20} MiB upload"
    with server.http() as http:
        http.delete(f"/files/{response.json()['id']}")


def test_oversized_upload_is_refused_and_leaves_nothing(tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.conftest import start_server

    small = start_server(tmp_path_factory.mktemp("small-limit"), OPENFT_MAX_UPLOAD_BYTES="1000")
    try:
        client = small.client()
        with pytest.raises(openai.APIStatusError) as raised:
            client.files.create(file=("big.jsonl", b"x" * 5000), purpose="fine-tune")
        assert raised.value.status_code == 413
        assert raised.value.code == "file_too_large"
        assert client.files.list().data == []
        assert list((small.data_dir / "blobs").rglob("*")) in ([], [small.data_dir / "blobs" / "files"])

        # Chunked, without a Content-Length to refuse early: the limit still holds mid-stream.
        def chunks() -> object:
            yield b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
            for _ in range(10):
                yield b"y" * 500
            yield b"\r\n--B--\r\n"

        with small.http() as http:
            response = http.post(
                "/files",
                content=chunks(),
                headers={"content-type": "multipart/form-data; boundary=B"},  # type: ignore[arg-type]
            )
        assert response.status_code == 413
        assert response.json()["error"]["param"] == "file"
        assert [p for p in (small.data_dir / "blobs").rglob("*") if p.is_file()] == []
    finally:
        small.stop()


def test_a_client_leaving_mid_upload_is_one_log_line(server: LiveServer) -> None:
    class Gone(Exception):
        pass

    def body() -> Iterator[bytes]:
        yield b'--XyZ\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        yield b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n' + b"x" * 65536
        raise Gone  # the client stops sending and drops the connection

    headers = {"content-type": "multipart/form-data; boundary=XyZ", "Authorization": "Bearer sk-test"}
    earlier = len(server.log())  # other tests log tracebacks on purpose (a lost blob's 500)
    with pytest.raises(Gone):
        httpx.post(f"{server.base_url}/files", content=body(), headers=headers, timeout=30)
    line = "the client went away during POST /v1/files"
    wait_until(lambda: line in server.log()[earlier:], timeout=30, what="the log line")
    assert "Traceback" not in server.log()[earlier:]

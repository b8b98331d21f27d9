"""The Uploads API: a file sent in parts becomes an ordinary file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import openai
import pytest
from openai.types import Upload
from openai.types.uploads import UploadPart

from tests.conftest import LiveServer


def test_parts_assemble_in_the_given_order(client: openai.OpenAI) -> None:
    chunks = [b"first-", b"second-", b"third"]
    upload = client.uploads.create(
        bytes=sum(map(len, chunks)), filename="train.jsonl", mime_type="text/jsonl", purpose="fine-tune"
    )
    assert upload.status == "pending" and upload.id.startswith("upload_")
    assert upload.expires_at == upload.created_at + 3600
    parts = [client.uploads.parts.create(upload.id, data=chunk) for chunk in chunks]
    assert all(p.upload_id == upload.id and p.id.startswith("part_") for p in parts)

    # Parts may arrive in any order; `part_ids` decides the file's order.
    order = [parts[0].id, parts[1].id, parts[2].id]
    completed = client.uploads.complete(upload.id, part_ids=order, md5=hashlib.md5(b"".join(chunks)).hexdigest())
    assert completed.status == "completed"
    assert completed.file is not None
    assert completed.file.bytes == len(b"".join(chunks))
    assert completed.file.filename == "train.jsonl"
    assert completed.file.purpose == "fine-tune"
    assert client.files.content(completed.file.id).content == b"".join(chunks)
    assert client.files.retrieve(completed.file.id).id == completed.file.id


def test_sdk_chunked_helper(client: openai.OpenAI, tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    payload = bytes(range(256)) * 4096  # 1 MiB
    path.write_bytes(payload)
    upload = client.uploads.upload_file_chunked(
        file=path, mime_type="application/jsonl", purpose="fine-tune", part_size=300_000
    )
    assert upload.status == "completed" and upload.file is not None
    assert client.files.content(upload.file.id).content == payload


def test_wrong_size_bad_part_and_double_complete_are_400(client: openai.OpenAI) -> None:
    upload = client.uploads.create(bytes=10, filename="a", mime_type="text/plain", purpose="user_data")
    part = client.uploads.parts.create(upload.id, data=b"12345")
    with pytest.raises(openai.BadRequestError) as short:
        client.uploads.complete(upload.id, part_ids=[part.id])
    assert short.value.param == "part_ids"
    with pytest.raises(openai.BadRequestError) as unknown:
        client.uploads.complete(upload.id, part_ids=[part.id, "part_nope"])
    assert unknown.value.param == "part_ids"
    second = client.uploads.parts.create(upload.id, data=b"67890")
    assert client.uploads.complete(upload.id, part_ids=[part.id, second.id]).status == "completed"
    with pytest.raises(openai.BadRequestError) as again:
        client.uploads.complete(upload.id, part_ids=[part.id, second.id])
    assert again.value.code == "invalid_state"


def test_cancel_then_no_more_parts(client: openai.OpenAI) -> None:
    upload = client.uploads.create(bytes=3, filename="a", mime_type="text/plain", purpose="user_data")
    client.uploads.parts.create(upload.id, data=b"abc")
    assert client.uploads.cancel(upload.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError) as raised:
        client.uploads.parts.create(upload.id, data=b"abc")
    assert raised.value.code == "invalid_state"


def test_unknown_upload_is_404_and_bad_body_is_400(server: LiveServer) -> None:
    with server.http() as http:
        missing = http.post("/uploads/upload_nope/cancel")
        bad = http.post("/uploads", json={"bytes": 1, "filename": "a", "mime_type": "x", "purpose": "nope"})
        not_json = http.post("/uploads", content=b"{", headers={"content-type": "application/json"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "purpose"
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"


def test_raw_json_matches_the_sdk_types(server: LiveServer) -> None:
    with server.http() as http:
        body = {"bytes": 2, "filename": "a", "mime_type": "text/plain", "purpose": "user_data"}
        upload = Upload.model_validate(http.post("/uploads", json=body).json())
        part = UploadPart.model_validate(
            http.post(f"/uploads/{upload.id}/parts", files={"data": ("upload", b"ok")}).json()
        )
        done = Upload.model_validate(http.post(f"/uploads/{upload.id}/complete", json={"part_ids": [part.id]}).json())
    assert done.file is not None and done.file.bytes == 2


def test_parts_beyond_the_declared_size_are_refused_and_not_kept(client: openai.OpenAI, server: LiveServer) -> None:
    upload = client.uploads.create(bytes=6, filename="a", mime_type="text/plain", purpose="user_data")
    first = client.uploads.parts.create(upload.id, data=b"1234")
    with pytest.raises(openai.BadRequestError) as over:
        client.uploads.parts.create(upload.id, data=b"567")
    assert over.value.param == "data"
    parts_dir = server.data_dir / "blobs" / "uploads" / upload.id
    assert [path.name for path in parts_dir.iterdir() if not path.name.startswith(".")] == [first.id]
    last = client.uploads.parts.create(upload.id, data=b"56")
    completed = client.uploads.complete(upload.id, part_ids=[first.id, last.id])
    assert completed.file is not None and client.files.content(completed.file.id).content == b"123456"

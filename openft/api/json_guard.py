"""JSON bodies are read whole before a route sees them: bounded in size (413), and refused when a
string holds a lone UTF-16 surrogate (`"\\udfff"`), which JSON allows but UTF-8 can't encode, so
that it could never be stored or sent back (400 instead of a 500 on every later read)."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openft.api.errors import error_response


class JsonBodyGuard:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                response = error_response(
                    413,
                    f"The request body is larger than {self.max_bytes} bytes.",
                    code="request_too_large",
                )
                await response(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if _has_lone_surrogate(body):
            response = error_response(
                400,
                "The request body has a string with a lone UTF-16 surrogate (such as \\udfff), which is not "
                "valid Unicode text.",
                code="invalid_unicode",
            )
            await response(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            return value.split(b";")[0].strip().lower() == b"application/json"
    return False


def _has_lone_surrogate(body: bytes) -> bool:
    if b"\\u" not in body:
        return False  # the only way to write one in JSON is an escape
    try:
        document = json.loads(body)
    except ValueError:
        return False  # not JSON: the route answers invalid_json
    return _any_surrogate(document)


def _any_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_any_surrogate(k) or _any_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_any_surrogate(item) for item in value)
    return False


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    return replayed

"""JSON bodies are read whole before a route sees them: bounded in size (413), and refused when a
string holds a lone UTF-16 surrogate (`"\\udfff"`), which JSON allows but UTF-8 can't encode, so
that it could never be stored or sent back (400 instead of a 500 on every later read). Bytes that
are not text, and arrays or objects nested deeper than `MAX_JSON_DEPTH`, are `invalid_json` here:
the parser fails on those with a UnicodeDecodeError or a RecursionError rather than a ValueError,
which came out as FastAPI's vague "error parsing the body" or, for the surrogate check, a 500."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openft.api.errors import error_response

MAX_JSON_DEPTH = 128  # far below the interpreter's recursion limit, far above any real request


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
        refusal = _refusal(body)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)


def _is_json(scope: Scope) -> bool:
    """What FastAPI parses as JSON: `application/json` and `application/…+json`."""
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            media_type = value.split(b";")[0].strip().lower()
            return media_type == b"application/json" or (
                media_type.startswith(b"application/") and media_type.endswith(b"+json")
            )
    return False


def _refusal(body: bytes) -> JSONResponse | None:
    encoding = json.detect_encoding(body)  # as json.loads decodes bytes (UTF-8, or UTF-16/32 with a BOM)
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError:
        try:
            body.decode(encoding, "surrogatepass")
        except UnicodeDecodeError:
            return error_response(
                400, "The request body is not UTF-8 text, so it is not valid JSON.", code="invalid_json"
            )
        return _lone_surrogate()  # encoded as bytes rather than escaped
    nests = text.count("[") + text.count("{") > MAX_JSON_DEPTH
    if "\\u" not in text and not nests:
        return None  # no escape can hide a surrogate, and too few brackets to nest too deep: nothing to parse
    try:
        document = json.loads(text)
    except RecursionError:
        return _too_deep()
    except ValueError:
        return None  # not JSON: the route answers invalid_json
    depth, lone_surrogate = _inspect(document)
    if depth > MAX_JSON_DEPTH:
        return _too_deep()
    return _lone_surrogate() if lone_surrogate else None


def _lone_surrogate() -> JSONResponse:
    return error_response(
        400,
        "The request body has a string with a lone UTF-16 surrogate (such as \\udfff), which is not "
        "valid Unicode text.",
        code="invalid_unicode",
    )


def _too_deep() -> JSONResponse:
    return error_response(
        400, f"The request body nests arrays and objects more than {MAX_JSON_DEPTH} deep.", code="invalid_json"
    )


def _inspect(document: Any) -> tuple[int, bool]:
    """The nesting depth of `document` and whether any string (key or value) in it holds a lone
    surrogate; without recursion, so that no depth can exhaust the stack."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(document, 0)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            if not _is_utf8(value):
                return deepest, True
        elif isinstance(value, dict | list):
            deepest = max(deepest, depth + 1)
            if deepest > MAX_JSON_DEPTH:
                return deepest, False
            items = [item for pair in value.items() for item in pair] if isinstance(value, dict) else value
            pending.extend((item, depth + 1) for item in items)
    return deepest, False


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    return replayed

"""The one place where failures become OpenAI-style error bodies, and every response gets an
`x-request-id`."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openft import ids
from openft.errors import ServiceError
from openft.protocol.common import ErrorDetail, ErrorResponse

log = logging.getLogger(__name__)

INTERNAL_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"


def error_response(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorResponse(error=ErrorDetail(message=message, type=type, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]


async def _service_error(_request: Request, error: ServiceError) -> JSONResponse:
    return error_response(
        error.status, error.message, type=error.type, param=error.param, code=error.code, headers=error.headers()
    )


async def _validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
    first: dict[str, Any] = error.errors()[0]
    param = _param_of(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return error_response(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
            "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
            "valid JSON.)",
            code="invalid_json",
        )
    if first.get("type") == "missing":
        return error_response(
            400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
        )
    received = json.dumps(first.get("input"), default=str)[:200]
    if param is None:  # the body itself, not one of its fields
        return error_response(
            400,
            f"The request body must be a JSON object of this endpoint's parameters (received {received}).",
            code="invalid_value",
        )
    return error_response(
        400,
        f"Invalid value for '{param}': {first.get('msg', 'invalid')} (received {received}).",
        param=param,
        code="invalid_value",
    )


_LOCATIONS = {"body", "query", "path", "header"}
# Pydantic names the union member it tried (`literal['auto']`, `int`, `function-after[…]`): not a field.
_UNION_TAG = re.compile(r"^(int|float|str|bool|none|list\[.*|dict\[.*|literal\[.*|function-\w+\[.*)$")


def _param_of(location: tuple[Any, ...]) -> str | None:
    parts = [str(part) for part in location if str(part) not in _LOCATIONS and not _UNION_TAG.match(str(part))]
    return ".".join(parts) or None


async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    if error.status_code == 404:
        return error_response(404, f"Invalid URL ({request.method} {request.url.path})", code="unknown_url")
    if error.status_code == 405:
        return error_response(
            405, f"Method {request.method} is not allowed on {request.url.path}.", code="method_not_allowed"
        )
    return error_response(error.status_code, str(error.detail), code="http_error")


class RequestIdMiddleware:
    """Adds `x-request-id` to every response and turns an unhandled exception into a bare 500 body
    (no trace, no path), logged with the same request id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = "req_" + ids.random_token(24)
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:  # nobody to answer, and nothing wrong with the server: one line
            log.info(
                "the client went away during %s %s (request %s)", scope.get("method"), scope.get("path"), request_id
            )
        except Exception:
            log.exception("unhandled error in %s %s (request %s)", scope.get("method"), scope.get("path"), request_id)
            if started:
                raise
            response = error_response(500, INTERNAL_ERROR_MESSAGE, type="server_error", code="server_error")
            await response(scope, receive, send_with_id)

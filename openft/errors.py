"""Errors the service raises; the API turns each into an OpenAI-style error body.

`code` values are documented in docs/errors.md.
"""

from __future__ import annotations


class ServiceError(Exception):
    status = 400
    type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequest(ServiceError):
    status = 400


class AuthenticationFailed(ServiceError):
    status = 401


class NotFound(ServiceError):
    status = 404


class PayloadTooLarge(ServiceError):
    status = 413


class ServerError(ServiceError):
    status = 500
    type = "server_error"

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

    def headers(self) -> dict[str, str]:
        """Response headers that go with the error body."""
        return {}


class InvalidRequest(ServiceError):
    status = 400


class AuthenticationFailed(ServiceError):
    status = 401


class PermissionDenied(ServiceError):
    status = 403


class NotFound(ServiceError):
    status = 404


class PayloadTooLarge(ServiceError):
    status = 413


class RateLimited(ServiceError):
    """Over a limit: answered 429 with `Retry-After`, which the SDKs honour when they retry."""

    status = 429
    type = "requests"

    def __init__(
        self,
        message: str,
        *,
        retry_after_seconds: int,
        limit: int | None = None,
        code: str = "rate_limit_exceeded",
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after_seconds = retry_after_seconds
        self.limit = limit

    def headers(self) -> dict[str, str]:
        headers = {"retry-after": str(self.retry_after_seconds)}
        if self.limit is not None:  # OpenAI's names for a request limit
            headers["x-ratelimit-limit-requests"] = str(self.limit)
            headers["x-ratelimit-remaining-requests"] = "0"
            headers["x-ratelimit-reset-requests"] = f"{self.retry_after_seconds}s"
        return headers


class ServerError(ServiceError):
    status = 500
    type = "server_error"

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
        if self.limit is not None:
            headers.update(request_limit_headers(self.limit, 0, self.retry_after_seconds))
        return headers


class QuotaExceeded(InvalidRequest):
    """Over a quota that waiting doesn't lift (the organization's stored bytes): 400, as OpenAI
    answers its file storage limit, so the SDKs don't retry; with the quota's headers."""

    def __init__(self, message: str, *, param: str | None, code: str, headers: dict[str, str]) -> None:
        super().__init__(message, param=param, code=code)
        self._headers = headers

    def headers(self) -> dict[str, str]:
        return dict(self._headers)


def request_limit_headers(limit: int, remaining: int, reset_seconds: int) -> dict[str, str]:
    """OpenAI's names for a limit on requests: on a 429 and on the answer to every request that a
    per-hour or at-once quota counted. `reset` is when the next one is allowed again."""
    return {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(max(0, remaining)),
        "x-ratelimit-reset-requests": f"{max(0, reset_seconds)}s",
    }


def storage_limit_headers(limit: int, remaining: int) -> dict[str, str]:
    """openft's own, in the same family (OpenAI announces no storage limit in headers): the bytes an
    organization may store and how many of them are still free. Storage doesn't reset with time."""
    return {"x-ratelimit-limit-bytes": str(limit), "x-ratelimit-remaining-bytes": str(max(0, remaining))}


class ServerError(ServiceError):
    status = 500
    type = "server_error"

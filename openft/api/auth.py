"""Bearer keys and the organization each one belongs to."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request

from openft.config import DEFAULT_ORGANIZATION, Settings
from openft.errors import AuthenticationFailed


@dataclass(frozen=True)
class Caller:
    organization: str


def authenticate(settings: Settings, authorization: str | None) -> Caller:
    """Single-user mode (no keys configured) accepts any caller into one organization."""
    keys = settings.api_key_organizations
    if not keys:
        return Caller(organization=DEFAULT_ORGANIZATION)
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed(
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            code="missing_api_key",
        )
    for key, organization in keys.items():
        if hmac.compare_digest(key.encode(), token.encode()):
            return Caller(organization=organization)
    raise AuthenticationFailed(f"Incorrect API key provided: {_mask(token)}.", code="invalid_api_key")


def _mask(token: str) -> str:
    return token[:3] + "*" * 4 + token[-4:] if len(token) > 8 else "*" * len(token)


async def current_caller(request: Request) -> Caller:
    """Async, so that it runs on the event loop: a busy thread pool can't delay authentication."""
    settings: Settings = request.app.state.services.settings
    return authenticate(settings, request.headers.get("authorization"))

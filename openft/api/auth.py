"""Bearer keys and the organization each one belongs to."""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request

from openft.config import DEFAULT_ORGANIZATION, Settings
from openft.errors import AuthenticationFailed, PermissionDenied


@dataclass(frozen=True)
class Caller:
    organization: str
    admin: bool = False  # authenticated with one of OPENFT_ADMIN_KEYS


def authenticate(settings: Settings, authorization: str | None) -> Caller:
    """Single-user mode (no keys configured) accepts any caller into one organization. Admin keys
    are API keys of their organization too, marked as admin."""
    keys = settings.key_organizations
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
            return Caller(organization=organization, admin=key in settings.admin_key_organizations)
    raise AuthenticationFailed(f"Incorrect API key provided: {_mask(token)}.", code="invalid_api_key")


def _mask(token: str) -> str:
    return token[:3] + "*" * 4 + token[-4:] if len(token) > 8 else "*" * len(token)


async def current_caller(request: Request) -> Caller:
    """Async, so that it runs on the event loop: a busy thread pool can't delay authentication."""
    settings: Settings = request.app.state.services.settings
    if settings.single_user:
        refuse_browsers_of_other_sites(request.headers.get("host"), request.headers.get("origin"))
    return authenticate(settings, request.headers.get("authorization"))


def refuse_browsers_of_other_sites(host: str | None, origin: str | None) -> None:
    """Without keys, anything that reaches the port is trusted, so only this machine's own clients
    may: a Host that isn't a loopback name is a web page's DNS rebinding, and an Origin that isn't
    a loopback one is another site's page posting through the browser (CSRF). SDKs send neither."""
    if not _is_loopback_host(host or ""):
        raise PermissionDenied(
            f"Host {host!r} is not this machine: without API keys, openft only answers requests for "
            "localhost or a loopback address.",
            code="invalid_host",
        )
    if origin is not None and not _is_loopback_host(urlsplit(origin).netloc):
        raise PermissionDenied(
            f"Requests from web pages of {origin} are refused: without API keys, openft only answers "
            "this machine's own clients.",
            code="cross_origin_request",
        )


def _is_loopback_host(host: str) -> bool:
    """`localhost`, `127.0.0.1:8000`, `[::1]:8000` and the like."""
    if host.startswith("[") and "]" in host:
        name = host[1 : host.index("]")]
    else:
        name = host.split(":")[0] if host.count(":") == 1 else host
    name = name.lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False

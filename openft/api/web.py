"""The dashboard: static pages under /dashboard/ that call the public API (/v1) with the user's
key, like any other client. Nothing here authenticates: the pages hold no data of their own."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

DASHBOARD_DIR = Path(__file__).parent / "dashboard"
# The key lives in the browser's storage: only the dashboard's own scripts may run, talk to this
# server, or frame it.
HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",  # an upgraded openft serves its new pages at once
}


class DashboardFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


def install_dashboard(app: FastAPI) -> None:
    # Relative Locations: never built from the Host header.
    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/dashboard/", status_code=307)

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> RedirectResponse:
        return RedirectResponse("/dashboard/", status_code=307)

    app.mount("/dashboard", DashboardFiles(directory=DASHBOARD_DIR, html=True), name="dashboard")

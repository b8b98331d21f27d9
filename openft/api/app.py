"""The FastAPI application: routers under /v1, error bodies, request ids."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI

from openft import __version__
from openft.api import chat, data_check, files, fine_tuning, models, permissions, uploads
from openft.api.auth import current_caller
from openft.api.errors import RequestIdMiddleware, install_error_handlers
from openft.api.json_guard import JsonBodyGuard
from openft.api.web import install_dashboard
from openft.protocol.common import ErrorResponse
from openft.service import Services


def create_app(services: Services) -> FastAPI:
    # No redirects from `/v1/files/` to `/v1/files`: their Location would come from the Host header.
    app = FastAPI(title="openft", version=__version__, docs_url=None, redoc_url=None, redirect_slashes=False)
    app.state.services = services
    v1 = APIRouter(
        prefix="/v1",
        dependencies=[Depends(current_caller)],
        # Instead of FastAPI's 422 with its own body: every refusal is an OpenAI-style error (docs/errors.md).
        responses={"default": {"model": ErrorResponse, "description": "An error: see docs/errors.md."}},
    )
    for module in (files, data_check, uploads, fine_tuning, permissions, models, chat):
        v1.include_router(module.router)
    app.include_router(v1)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, Any]:
        """Up; and each base model's load state and its scheduler's figures (running, waiting, ...)."""
        return {"status": "ok", **services.chat.status()}

    install_dashboard(app)

    install_error_handlers(app)
    app.add_middleware(JsonBodyGuard, max_bytes=services.settings.max_json_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    return app

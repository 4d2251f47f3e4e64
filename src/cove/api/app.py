"""The Starlette application: every surface's routes over the services in app.state."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from cove.api.preview.edge import PreviewEdge
from cove.api.ratelimit import RateLimit
from cove.api.sandbox import routes as sandbox_routes
from cove.api.v0 import jobs as v0_jobs
from cove.api.v0 import previews as v0_previews
from cove.api.v0 import sandboxes as v0_sandboxes
from cove.api.v1 import deploy as v1_deploy
from cove.api.v1 import jobs as v1_jobs
from cove.api.v1 import previews as v1_previews
from cove.api.v1 import runs as v1_runs
from cove.api.v1 import sandboxes as v1_sandboxes


async def health(request: Request) -> Response:
    if getattr(request.app.state, "ready", False):
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "starting"}, status_code=503)


async def not_found(request: Request, exc: Exception) -> Response:
    """Plain-text 404: the SDK reads a non-JSON 404 as 'route not implemented'."""
    return PlainTextResponse("404 page not found", status_code=404)


def build_app(
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]],
) -> Starlette:
    routes = [
        Route("/health", health, methods=["GET"]),
        *v0_sandboxes.routes,
        *v0_previews.routes,
        *v1_previews.routes,
        *v1_deploy.routes,
        *v0_jobs.routes,
        *v1_jobs.routes,
        *v1_runs.routes,
        *sandbox_routes.routes(),  # before v1 so /v1/sandboxes/{name}/process is matched here
        *v1_sandboxes.routes,
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: not_found},
        # Preview traffic (by path or Host header) first; the rate limit sees only API calls.
        middleware=[Middleware(PreviewEdge), Middleware(RateLimit)],
    )

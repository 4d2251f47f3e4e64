"""Resolving the sandbox behind a sandbox-API request, and that API's error shape."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cove.api.common import guarded as _guarded
from cove.api.common import workspace_of
from cove.domain.errors import CoveError
from cove.services.sandboxes import LiveSandbox, SandboxService


def error(exc: CoveError) -> Response:
    return JSONResponse({"error": exc.message}, status_code=exc.status)


guarded = _guarded(error)

Resolver = Callable[[SandboxService, str, str], LiveSandbox]


def by_id(service: SandboxService, workspace: str, ref: str) -> LiveSandbox:
    return service.get_by_id(workspace, ref)


def by_name(service: SandboxService, workspace: str, ref: str) -> LiveSandbox:
    return service.get(workspace, ref)


def running_sandbox(request: Request) -> LiveSandbox:
    """The authenticated caller's running sandbox this request addresses (404 / 503 else)."""
    resolve: Resolver = request.scope["cove.resolve"]
    live = resolve(request.app.state.sandboxes, workspace_of(request), request.path_params["ref"])
    live.require_running()
    live.record.touch()
    return live

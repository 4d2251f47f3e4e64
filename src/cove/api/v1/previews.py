"""/v1/sandboxes/{name}/previews — Compute API previews: POST {"port", "public"?} and list."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cove.api.common import guarded, json_object, only_fields, typed, workspace_of
from cove.api.v1.sandboxes import error
from cove.domain.durations import iso
from cove.domain.preview import Preview, PreviewSpec, validate_port, validate_preview_name
from cove.services.previews import PreviewService

_FIELDS = {"port", "public", "name"}


def _service(request: Request) -> PreviewService:
    return request.app.state.previews


def render(request: Request, p: Preview) -> dict[str, Any]:
    url, host_url = request.app.state.preview_urls(p)
    return {
        "name": p.name,
        "port": p.spec.port,
        "public": p.spec.public,
        "url": url,
        "hostUrl": host_url,
        "createdAt": iso(p.created_at),
    }


@guarded(error)
async def create(request: Request) -> Response:
    workspace = workspace_of(request)
    body = await json_object(request)
    only_fields(body, _FIELDS)
    port = validate_port(body.get("port"))
    public = typed(body, "public", bool, "")
    name = validate_preview_name(typed(body, "name", str, "") or f"preview-{port}")
    sandbox = request.path_params["name"]
    service = _service(request)
    await request.app.state.sandboxes.get_or_gone(workspace, sandbox)
    spec = PreviewSpec(port=port, public=True if public is None else public)
    preview = await service.create(workspace, sandbox, name, spec)
    return JSONResponse(render(request, preview), status_code=201)


@guarded(error)
async def list_previews(request: Request) -> Response:
    workspace = workspace_of(request)
    sandbox = request.path_params["name"]
    await request.app.state.sandboxes.get_or_gone(workspace, sandbox)
    found = _service(request).list(workspace, sandbox)
    return JSONResponse({"previews": [render(request, p) for p in found]})


routes = [
    Route("/v1/sandboxes/{name}/previews", create, methods=["POST"]),
    Route("/v1/sandboxes/{name}/previews", list_previews, methods=["GET"]),
]

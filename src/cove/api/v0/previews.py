"""/v0/sandboxes/{name}/previews[/{preview}[/tokens[/{token}]]] — Blaxel previews and tokens."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cove.api.common import guarded, json_object, typed, workspace_of
from cove.api.v0.sandboxes import _error
from cove.domain.durations import iso, utcnow
from cove.domain.errors import InvalidRequest
from cove.domain.preview import (
    Preview,
    PreviewSpec,
    PreviewToken,
    validate_headers,
    validate_port,
    validate_preview_name,
)
from cove.services.previews import PreviewService, parse_expiry


def _service(request: Request) -> PreviewService:
    return request.app.state.previews


def parse_preview_spec(body: dict[str, Any]) -> PreviewSpec:
    spec = typed(body, "spec", dict, "") or {}
    public = typed(spec, "public", bool, "spec.")
    return PreviewSpec(
        port=validate_port(spec.get("port")),
        public=bool(public),
        prefix_url=typed(spec, "prefixUrl", str, "spec.") or None,
        custom_domain=typed(spec, "customDomain", str, "spec.") or None,
        request_headers=validate_headers(spec.get("requestHeaders"), "spec.requestHeaders"),
        response_headers=validate_headers(spec.get("responseHeaders"), "spec.responseHeaders"),
        ttl=typed(spec, "ttl", str, "spec.") or None,
        expires=typed(spec, "expires", str, "spec.") or None,
    )


def render_preview(request: Request, p: Preview) -> dict[str, Any]:
    url, host_url = request.app.state.preview_urls(p)
    spec: dict[str, Any] = {
        "port": p.spec.port,
        "public": p.spec.public,
        "url": url,
        "requestHeaders": p.spec.request_headers,
        "responseHeaders": p.spec.response_headers,
    }
    if host_url:
        spec["hostUrl"] = host_url  # cove: the same preview served at / (<label>.<domain>)
    for key, value in (
        ("prefixUrl", p.spec.prefix_url),
        ("customDomain", p.spec.custom_domain),
        ("ttl", p.spec.ttl),
        ("expires", p.spec.expires),
    ):
        if value:
            spec[key] = value
    return {
        "metadata": {
            "name": p.name,
            "displayName": p.name,
            "resourceName": p.sandbox_name,
            "resourceType": "sandbox",
            "workspace": p.workspace,
            "createdAt": iso(p.created_at),
            "updatedAt": iso(p.updated_at),
        },
        "spec": spec,
        "status": "DEPLOYED",
        "events": [],
    }


def render_token(p: Preview, t: PreviewToken) -> dict[str, Any]:
    return {
        "metadata": {
            "name": t.name,
            "previewName": p.name,
            "resourceName": p.sandbox_name,
            "resourceType": "sandbox",
            "workspace": p.workspace,
        },
        "spec": {"token": t.value, "expiresAt": iso(t.expires_at), "expired": t.expired()},
    }


def _names(request: Request) -> tuple[str, str]:
    return workspace_of(request), request.path_params["name"]


@guarded(_error)
async def create(request: Request) -> Response:
    workspace, sandbox = _names(request)
    body = await json_object(request)
    metadata = typed(body, "metadata", dict, "") or {}
    spec = parse_preview_spec(body)
    name = typed(metadata, "name", str, "metadata.") or f"preview-{spec.port}"
    preview = await _service(request).create(workspace, sandbox, validate_preview_name(name), spec)
    return JSONResponse(render_preview(request, preview))


@guarded(_error)
async def list_previews(request: Request) -> Response:
    workspace, sandbox = _names(request)
    found = _service(request).list(workspace, sandbox)
    return JSONResponse([render_preview(request, p) for p in found])


@guarded(_error)
async def get(request: Request) -> Response:
    workspace, sandbox = _names(request)
    preview = _service(request).get(workspace, sandbox, request.path_params["preview"])
    return JSONResponse(render_preview(request, preview))


@guarded(_error)
async def replace(request: Request) -> Response:
    workspace, sandbox = _names(request)
    body = await json_object(request)
    name = request.path_params["preview"]
    metadata = typed(body, "metadata", dict, "") or {}
    if metadata.get("name") not in (None, name):
        raise InvalidRequest("metadata.name cannot be changed")
    spec = parse_preview_spec(body)
    preview = await _service(request).replace(workspace, sandbox, name, spec)
    return JSONResponse(render_preview(request, preview))


@guarded(_error)
async def delete(request: Request) -> Response:
    workspace, sandbox = _names(request)
    preview = await _service(request).delete(workspace, sandbox, request.path_params["preview"])
    return JSONResponse(render_preview(request, preview))


@guarded(_error)
async def create_token(request: Request) -> Response:
    workspace, sandbox = _names(request)
    body = await json_object(request, required=False)
    spec = typed(body, "spec", dict, "") or {}
    expires_at = parse_expiry(spec.get("expiresAt"))
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidRequest("spec.expiresAt must be in the future")
    preview, token = await _service(request).create_token(
        workspace, sandbox, request.path_params["preview"], expires_at
    )
    return JSONResponse(render_token(preview, token))


@guarded(_error)
async def list_tokens(request: Request) -> Response:
    workspace, sandbox = _names(request)
    preview, tokens = _service(request).tokens(workspace, sandbox, request.path_params["preview"])
    return JSONResponse([render_token(preview, t) for t in tokens])


@guarded(_error)
async def delete_token(request: Request) -> Response:
    workspace, sandbox = _names(request)
    token = await _service(request).delete_token(
        workspace, sandbox, request.path_params["preview"], request.path_params["token"]
    )
    return JSONResponse({"message": f"token {token.name} deleted", "name": token.name})


_P = "/v0/sandboxes/{name}/previews"
routes = [
    Route(_P, create, methods=["POST"]),
    Route(_P, list_previews, methods=["GET"]),
    Route(_P + "/{preview}", get, methods=["GET"]),
    Route(_P + "/{preview}", replace, methods=["PUT"]),
    Route(_P + "/{preview}", delete, methods=["DELETE"]),
    Route(_P + "/{preview}/tokens", create_token, methods=["POST"]),
    Route(_P + "/{preview}/tokens", list_tokens, methods=["GET"]),
    Route(_P + "/{preview}/tokens/{token}", delete_token, methods=["DELETE"]),
]

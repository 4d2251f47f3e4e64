"""/v0/sandboxes — the Blaxel control plane. Parses, calls the service, renders."""

from __future__ import annotations

import base64
import functools

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cove.api.common import flag, guarded, int_param, json_object, workspace_of
from cove.api.v0 import wire
from cove.domain.errors import CoveError, InvalidRequest
from cove.domain.sandbox import Sandbox
from cove.services.billing import Billing, sandbox_quote
from cove.services.sandboxes import CreateSandbox, SandboxService


def _error(exc: CoveError) -> Response:
    body = {"error": exc.message, "code": exc.status, "message": exc.message}
    body.update(getattr(exc, "details", {}))  # 402: price, currency, balance, action
    return JSONResponse(body, status_code=exc.status)


def _create_error(exc: CoveError) -> Response:
    """Create answers the SDK's SandboxError shape (string code, status_code)."""
    body = {
        "code": exc.code,
        "message": exc.message,
        "status_code": exc.status,
        "error": exc.message,
        **getattr(exc, "details", {}),  # 402: price, currency, balance, action
    }
    return JSONResponse(body, status_code=exc.status)


def _service(request: Request) -> SandboxService:
    return request.app.state.sandboxes


def _render(request: Request, s: Sandbox) -> dict:
    return wire.render(s, request.app.state.sandbox_url(s))


@guarded(_create_error)
async def create(request: Request) -> Response:
    workspace = workspace_of(request)
    body = await json_object(request)
    name, external_id = wire.parse_name(body)
    req = CreateSandbox(
        spec=wire.parse_spec(body),
        name=name,
        external_id=external_id,
        if_not_exists=flag(request, "createIfNotExist"),
    )
    service = _service(request)
    if name and _taken(service, workspace, name):  # 409 or createIfNotExist: nothing to pay
        return JSONResponse(_render(request, (await service.create(workspace, req)).record))
    # Metered like v1 (rate of its memory × its ttl), paid before anything exists.
    price = sandbox_quote(req.spec)
    create = functools.partial(service.create, workspace, req)
    live = await _billing(request).paid(workspace, price, "sandbox", name or "", create)
    return JSONResponse(_render(request, live.record))


def _billing(request: Request) -> Billing:
    return request.app.state.billing


def _taken(service: SandboxService, workspace: str, name: str) -> bool:
    try:
        return service.get(workspace, name) is not None
    except CoveError:
        return False


@guarded(_error)
async def list_sandboxes(request: Request) -> Response:
    workspace = workspace_of(request)
    service = _service(request)
    records = service.list(workspace)
    if flag(request, "showTerminated"):
        records = records + await service.list_deleted(workspace)
    external_id = request.query_params.get("externalId")
    if external_id is not None:
        records = [r for r in records if r.external_id == external_id]
    paged = "limit" in request.query_params or "cursor" in request.query_params
    if not paged and "blaxel-version" not in request.headers:
        return JSONResponse([_render(request, r) for r in records])
    start = _decode_cursor(request.query_params.get("cursor"))
    limit = int_param(request, "limit", 100, 1, 1000)
    page = records[start : start + limit]
    more = start + limit < len(records)
    meta = {
        "hasMore": more,
        "nextCursor": _encode_cursor(start + limit) if more else None,
        "total": len(records),
        "totalIsPartial": False,
    }
    return JSONResponse({"data": [_render(request, r) for r in page], "meta": meta})


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        kind, _, offset = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        if kind == "o" and offset.isdigit():
            return int(offset)
    except ValueError:
        pass
    raise InvalidRequest("cursor is not valid")


@guarded(_error)
async def get(request: Request) -> Response:
    live = _service(request).get(workspace_of(request), request.path_params["name"])
    return JSONResponse(_render(request, live.record))


@guarded(_error)
async def by_external_id(request: Request) -> Response:
    workspace = workspace_of(request)
    live = _service(request).find_by_external_id(workspace, request.path_params["external_id"])
    return JSONResponse(_render(request, live.record))


@guarded(_error)
async def replace(request: Request) -> Response:
    workspace = workspace_of(request)
    body = await json_object(request)
    name = request.path_params["name"]
    metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    if metadata.get("name") not in (None, name):
        raise InvalidRequest("metadata.name cannot be changed")
    live = await _service(request).replace_spec(workspace, name, wire.parse_spec(body))
    return JSONResponse(_render(request, live.record))


@guarded(_error)
async def egress_logs(request: Request) -> Response:
    """cove extension: the sandbox's egress request log (newest `limit`, oldest first) and its
    byte counters since it started."""
    limit = int_param(request, "limit", 100, 0, 1000)
    name = request.path_params["name"]
    report = _service(request).egress_report(workspace_of(request), name, limit)
    return JSONResponse({"logs": report.entries, **report.counters.as_json()})


@guarded(_error)
async def delete(request: Request) -> Response:
    live = await _service(request).delete(workspace_of(request), request.path_params["name"])
    return JSONResponse(_render(request, live.record))


routes = [
    Route("/v0/sandboxes", create, methods=["POST"]),
    Route("/v0/sandboxes", list_sandboxes, methods=["GET"]),
    Route("/v0/sandboxes/by-external-id/{external_id}", by_external_id, methods=["GET"]),
    Route("/v0/sandboxes/{name}", get, methods=["GET"]),
    Route("/v0/sandboxes/{name}", replace, methods=["PUT"]),
    Route("/v0/sandboxes/{name}", delete, methods=["DELETE"]),
    Route("/v0/sandboxes/{name}/egress/logs", egress_logs, methods=["GET"]),
]

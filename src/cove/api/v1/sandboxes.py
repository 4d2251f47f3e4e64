"""/v1/sandboxes — the Compute API (seed 000). Parses, calls the service, renders."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cove.api.common import guarded, json_object, only_fields, typed, workspace_of
from cove.domain.durations import iso, parse_duration
from cove.domain.errors import CoveError, InvalidRequest, RateLimited
from cove.domain.pricing import NOMINAL_MICROS
from cove.domain.sandbox import (
    DEFAULT_TIER,
    TIER_MEMORY_MB,
    Port,
    Sandbox,
    SandboxSpec,
    Status,
    validate_envs,
    validate_name,
)
from cove.services.billing import Billing, price_for, sandbox_quote
from cove.services.sandboxes import CreateSandbox, LiveSandbox, SandboxService

DEFAULT_TTL = "4h"
CREATE_WAIT_S = 5.0  # answer "provisioning" if the sandbox is not up by then
_FIELDS = {"name", "tier", "ttl", "envs", "port", "ports", "image"}


def error(exc: CoveError) -> Response:
    body = {"error": exc.code.lower(), "message": exc.message, "statusCode": exc.status}
    body.update(getattr(exc, "details", {}))  # 402: price, currency, balance, action
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    return JSONResponse(body, status_code=exc.status, headers=headers)


def _service(request: Request) -> SandboxService:
    return request.app.state.sandboxes


def _billing(request: Request) -> Billing:
    return request.app.state.billing


def render(request: Request, s: Sandbox) -> dict[str, Any]:
    running = s.status == Status.RUNNING
    out: dict[str, Any] = {
        "id": s.id,
        "name": s.name,
        "source": s.source,
        "status": s.status.value,
        "tier": s.spec.tier or _tier_of(s.spec.memory_mb),
        "url": request.app.state.sandbox_url(s) if running else None,
        "ports": [{"target": p.target, "protocol": p.protocol} for p in s.spec.ports],
        "expiresAt": iso(s.deadline()),
        "createdAt": iso(s.created_at),
        "updatedAt": iso(s.updated_at),
    }
    if s.status in (Status.FAILED, Status.STOPPED) and s.reason:
        out["error"] = s.reason
    deployed = request.app.state.deploys.current(s.id) if running else None
    if deployed is not None:  # seed 000: building → running (url: the app's) or failed + error
        out.update(status=deployed.status.value, url=deployed.url)
        if deployed.error:
            out["error"] = deployed.error
    return out


def _tier_of(memory_mb: int) -> str | None:
    return next((t for t, mb in TIER_MEMORY_MB.items() if mb == memory_mb), None)


def parse_create(body: dict[str, Any]) -> CreateSandbox:
    only_fields(body, _FIELDS)
    name = typed(body, "name", str, "")
    if name is None:
        raise InvalidRequest("name is required")
    tier = typed(body, "tier", str, "") or DEFAULT_TIER
    if tier not in TIER_MEMORY_MB:
        raise InvalidRequest(f"tier {tier!r} must be one of {', '.join(TIER_MEMORY_MB)}")
    ttl = body.get("ttl", DEFAULT_TTL)
    seconds = parse_duration(ttl, "ttl")
    if "port" in body and "ports" in body:
        raise InvalidRequest("port and ports are mutually exclusive")
    envs = typed(body, "envs", dict, "") or {}
    spec = SandboxSpec(
        image=typed(body, "image", str, "") or "blaxel/base-image:latest",
        memory_mb=TIER_MEMORY_MB[tier],
        tier=tier,
        envs=validate_envs(envs),
        ports=_ports(body),
        ttl=f"{seconds}s",
    )
    return CreateSandbox(spec=spec, name=validate_name(name))


def _ports(body: dict[str, Any]) -> list[Port]:
    if body.get("port") is not None:
        return [Port(body["port"])]
    items = typed(body, "ports", list, "") or []
    ports = []
    for item in items:
        if isinstance(item, dict):
            ports.append(Port(item.get("target"), item.get("name"), item.get("protocol") or "HTTP"))
        else:
            ports.append(Port(item))
    if len({p.target for p in ports}) != len(ports):
        raise InvalidRequest("ports: each port may be listed once")
    return ports


@guarded(error)
async def create(request: Request) -> Response:
    workspace = workspace_of(request)
    req = parse_create(await json_object(request))
    task = asyncio.ensure_future(_create_paid(request, workspace, req))
    done, _ = await asyncio.wait({task}, timeout=CREATE_WAIT_S)
    if task in done:
        return JSONResponse(render(request, task.result().record), status_code=201)
    live = _service(request).get(workspace, req.name or "")
    return JSONResponse(render(request, live.record), status_code=201)


async def _create_paid(request: Request, workspace: str, req: CreateSandbox) -> LiveSandbox:
    """Tier × ttl paid before anything exists (a 402 changes nothing), given back on failure."""
    service = _service(request)
    if req.name and _taken(service, workspace, req.name):
        return await service.create(workspace, req)  # the 409, not charged
    create = functools.partial(service.create, workspace, req)
    price = sandbox_quote(req.spec)
    return await _billing(request).paid(workspace, price, "sandbox", req.name or "", create)


def _taken(service: SandboxService, workspace: str, name: str) -> bool:
    try:
        return service.get(workspace, name) is not None
    except CoveError:
        return False


@guarded(error)
async def list_sandboxes(request: Request) -> Response:
    workspace = workspace_of(request)
    await _billing(request).charge(workspace, NOMINAL_MICROS, "nominal", "list sandboxes")
    records = _service(request).list(workspace)
    return JSONResponse({"sandboxes": [render(request, r) for r in records]})


@guarded(error)
async def get(request: Request) -> Response:
    name, workspace = request.path_params["name"], workspace_of(request)
    live = await _service(request).get_or_gone(workspace, name)
    await _billing(request).charge(workspace, NOMINAL_MICROS, "nominal", f"get {name}")
    return JSONResponse(render(request, live.record))


@guarded(error)
async def extend(request: Request) -> Response:
    workspace = workspace_of(request)
    body = await json_object(request, required=False)
    only_fields(body, {"ttl"})
    seconds = parse_duration(body.get("ttl", DEFAULT_TTL), "ttl")
    name, service = request.path_params["name"], _service(request)
    price = price_for((await service.get_or_gone(workspace, name)).record.spec, seconds)
    extend = functools.partial(service.extend, workspace, name, seconds)
    live = await _billing(request).paid(workspace, price, "extend", name, extend)
    return JSONResponse(render(request, live.record))


@guarded(error)
async def delete(request: Request) -> Response:
    workspace = workspace_of(request)
    name = request.path_params["name"]
    await _service(request).get_or_gone(workspace, name)
    await _billing(request).charge(workspace, NOMINAL_MICROS, "nominal", f"delete {name}")
    await _service(request).delete(workspace, name)
    return Response(status_code=204)


routes = [
    Route("/v1/sandboxes", create, methods=["POST"]),
    Route("/v1/sandboxes", list_sandboxes, methods=["GET"]),
    Route("/v1/sandboxes/{name}", get, methods=["GET"]),
    Route("/v1/sandboxes/{name}", extend, methods=["PATCH"]),
    Route("/v1/sandboxes/{name}", delete, methods=["DELETE"]),
]

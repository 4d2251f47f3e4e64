"""The sandbox API, served at each sandbox's metadata.url (/sbx/{id}) and, by the same
handlers, under /v1/sandboxes/{name} (seed 000 "Runtime Proxy Endpoints")."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from cove.api.common import Handler
from cove.api.sandbox import filesystem, process
from cove.api.sandbox.common import Resolver, by_id, by_name

_HANDLERS = process.ROUTES + filesystem.ROUTES
PREFIXES: list[tuple[str, Resolver]] = [("/sbx/{ref}", by_id), ("/v1/sandboxes/{ref}", by_name)]


def _bind(handler: Handler, resolve: Resolver) -> Handler:
    async def endpoint(request: Request) -> Response:
        request.scope["cove.resolve"] = resolve
        return await handler(request)

    return endpoint


def routes() -> list[BaseRoute]:
    return [
        _route(prefix + path, _bind(handler, resolve), methods)
        for prefix, resolve in PREFIXES
        for path, handler, methods in _HANDLERS
    ]


def _route(path: str, endpoint: Handler, methods: list[str]) -> BaseRoute:
    if methods == ["WEBSOCKET"]:  # the terminal and the port proxy (process.ROUTES)
        return WebSocketRoute(path, endpoint)  # type: ignore[arg-type]
    return Route(path, endpoint, methods=methods)

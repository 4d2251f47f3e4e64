"""What every HTTP surface shares: authentication, JSON bodies, query flags."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from cove.domain.errors import CoveError, InvalidRequest
from cove.services.auth import AuthService

MAX_JSON_BODY = 16 * 1024 * 1024


def workspace_of(request: Request) -> str:
    """Authenticated workspace; X-Blaxel-Authorization wins over Authorization."""
    preset = request.scope.get("cove.workspace")  # a session preview (api/preview/edge.py)
    if preset is not None:
        return preset
    auth: AuthService = request.app.state.auth
    headers = request.headers
    token = headers.get("x-blaxel-authorization") or headers.get("authorization")
    return auth.authenticate(token, headers.get("x-blaxel-workspace"))


async def read_body(request: Request, limit: int, what: str = "request body") -> bytes:
    """The whole body, refused once past `limit` while it streams in (a huge or endless body
    is never held in memory whole)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise InvalidRequest(f"{what} is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InvalidRequest(f"{what} is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_object(request: Request, required: bool = True) -> dict[str, Any]:
    body = await read_body(request, MAX_JSON_BODY)
    if not body.strip():
        if required:
            raise InvalidRequest("request body must be a JSON object")
        return {}
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    return data


def only_fields(body: dict[str, Any], allowed: set[str] | frozenset[str], where: str = "") -> None:
    """400 naming every field `body` has beyond `allowed` (typos must not pass silently)."""
    unknown = set(body) - set(allowed)
    if unknown:
        raise InvalidRequest(f"{where}unknown field(s): {', '.join(sorted(unknown))}")


def flag(request: Request, name: str, default: bool = False) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise InvalidRequest(f"query parameter {name} must be true or false")


def int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise InvalidRequest(f"query parameter {name} must be an integer from {lo} to {hi}")
    return int(raw)


def typed(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """data[key] if absent/None or of the given type; otherwise a 400 naming the field."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int, float))):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise InvalidRequest(f"{where}{key} must be of type {names}")
    return value


Handler = Callable[[Request], Awaitable[Response]]


def guarded(render_error: Callable[[CoveError], Response]) -> Callable[[Handler], Handler]:
    """Map domain errors raised by a handler to the surface's own error shape."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except CoveError as exc:
                return render_error(exc)

        return run

    return wrap

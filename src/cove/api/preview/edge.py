"""Preview traffic: an ASGI layer in front of every other route.

Two URL forms reach the same preview (both need no DNS set-up on this machine):
- path form  {public_url}/preview/{sandbox id}/{preview}/…  (the prefix is stripped)
- host form  http://{preview}-{sandbox id hex}.{preview domain}:{port}/…  served at /, for apps
  that need the root; the domain defaults to `localhost`, which browsers resolve with every
  subdomain. The host label exists only when it fits in 63 characters.
A preview on port 443 is a session: it serves the sandbox API routes (process, filesystem, logs,
watch, ports) of its sandbox and nothing else, with the preview token instead of an API key.
Any other port is proxied to 127.0.0.1:port in the sandbox (HTTP streamed, WebSocket bridged).
Private previews need a valid token (X-Blaxel-Preview-Token header or ?bl_preview_token=). A
browser opening a link with ?bl_preview_token= also gets it as an HttpOnly cookie scoped to the
preview, so the page's own requests (assets, fetch, WebSocket) carry it; the cookie, the header
and the query parameter are never forwarded to the sandbox.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from cove.api.sandbox.port_proxy import forward_http, forward_ws
from cove.api.sandbox.procs import ws_guarded
from cove.domain.errors import CoveError
from cove.domain.preview import SANDBOX_API_PORT, Preview
from cove.services.previews import PreviewService

TOKEN_HEADER = "x-blaxel-preview-token"
TOKEN_PARAM = "bl_preview_token"
_ID_PREFIX = "sbox_"
_HEX_ID = re.compile(r"[0-9a-f]{16}")  # domain.sandbox.new_sandbox_id without its prefix
_DROP_HEADER = TOKEN_HEADER.encode()
_COOKIE_PREFIX = TOKEN_PARAM.encode() + b"="


def preview_urls(public_url: str, domain: str, p: Preview) -> tuple[str, str | None]:
    """(path-form URL, host-form URL or None)."""
    path_url = f"{public_url}/preview/{p.sandbox_id}/{p.name}"
    label = f"{p.name}-{p.sandbox_id.removeprefix(_ID_PREFIX)}"
    if len(label) > 63 or not domain:
        return path_url, None
    base = urlsplit(public_url)
    port = f":{base.port}" if base.port else ""
    return path_url, f"{base.scheme or 'http'}://{label}.{domain}{port}"


class PreviewEdge:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            found = _match(scope)
            if found is not None:
                await _serve(self.app, scope, receive, send, *found)
                return
        await self.app(scope, receive, send)


def _match(scope: Scope) -> tuple[str, str, str, bytes] | None:
    """(sandbox id, preview name, rest of the path, its raw prefix) if this is preview traffic."""
    path: str = scope["path"]
    if path.startswith("/preview/"):
        parts = path.split("/", 4)  # "", "preview", id, name, rest
        if len(parts) < 4 or not parts[2] or not parts[3]:
            return None
        rest = "/" + parts[4] if len(parts) == 5 else "/"
        return parts[2], parts[3], rest, f"/preview/{parts[2]}/{parts[3]}".encode()
    domain = getattr(scope["app"].state, "preview_domain", "")
    if not domain:
        return None
    host = Headers(scope=scope).get("host", "").rsplit(":", 1)[0].lower()
    if not host.endswith("." + domain):
        return None
    label = host[: -len(domain) - 1]
    name, sep, hex_id = label.rpartition("-")
    if not sep or "." in label or not name or not _HEX_ID.fullmatch(hex_id):
        return None  # e.g. the API's own host under the same domain
    return _ID_PREFIX + hex_id, name, path, b""


def _token(scope: Scope) -> tuple[str | None, bool]:
    """(token, whether it came in the query string)."""
    headers = Headers(scope=scope)
    header = headers.get(TOKEN_HEADER)
    if header:
        return header, False
    query = scope.get("query_string", b"").decode("latin-1")
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == TOKEN_PARAM:
            return value, True
    for cookie in headers.getlist("cookie"):
        for part in cookie.split(";"):
            key, _, value = part.strip().partition("=")
            if key == TOKEN_PARAM and value:
                return value, False
    return None, False


def _without_token(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The request headers minus the token header and the token cookie."""
    out = []
    for key, value in headers:
        name = key.lower()
        if name == _DROP_HEADER:
            continue
        if name == b"cookie" and _COOKIE_PREFIX in value:
            kept = [c for c in value.split(b";") if not c.strip().startswith(_COOKIE_PREFIX)]
            if not any(c.strip() for c in kept):
                continue
            value = b";".join(kept).strip()
        out.append((key, value))
    return out


def _query_without_token(scope: Scope) -> str:
    query = scope.get("query_string", b"").decode("latin-1")
    if TOKEN_PARAM not in query:
        return query
    return urlencode(
        [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != TOKEN_PARAM]
    )


async def _serve(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    sandbox_id: str,
    name: str,
    rest: str,
    raw_prefix: bytes,
) -> None:
    previews: PreviewService = scope["app"].state.previews
    extra: list[tuple[bytes, bytes]] = []  # responseHeaders: they replace the app's own
    cookie: list[tuple[bytes, bytes]] = []

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start" and (extra or cookie):
            names = {k for k, _ in extra}
            kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
            message = {**message, "headers": kept + extra + cookie}
        await send(message)

    try:
        preview = previews.find(sandbox_id, name)
        extra = [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in preview.spec.response_headers.items()
        ]
        headers = Headers(scope=scope)
        if (
            scope["type"] == "http"
            and scope["method"] == "OPTIONS"
            and "access-control-request-method" in headers
            and preview.spec.response_headers
        ):  # CORS preflight: browsers send it without the token
            await Response(status_code=204)(scope, receive, send_with_headers)
            return
        token, from_query = _token(scope)
        live = previews.authorize(preview, token)
        if from_query and token and not preview.spec.public:
            path = raw_prefix.decode("latin-1") or "/"
            value = f"{TOKEN_PARAM}={token}; Path={path}; HttpOnly; SameSite=Lax"
            cookie.append((b"set-cookie", value.encode("latin-1")))
    except CoveError as exc:
        if scope["type"] == "websocket":
            await _deny_ws(scope, receive, send, exc)
        else:
            await _error(exc)(scope, receive, send_with_headers)
        return
    query = _query_without_token(scope)
    scope = {**scope, "headers": _without_token(scope["headers"])}
    if preview.spec.port == SANDBOX_API_PORT:
        await _sandbox_api(app, scope, receive, send_with_headers, preview, rest, raw_prefix)
        return
    assert live.processes is not None  # authorize() requires a running sandbox
    target = rest + ("?" + query if query else "")
    add = [
        (k.lower().encode("latin-1"), v.encode("latin-1"))
        for k, v in preview.spec.request_headers.items()
    ]
    if scope["type"] == "websocket":

        async def bridge(ws: WebSocket) -> None:
            await forward_ws(ws, live.processes, preview.spec.port, target, add=add)  # type: ignore[arg-type]

        await ws_guarded(bridge)(WebSocket(scope, receive, send))
        return
    request = Request(scope, receive)
    try:
        response = await forward_http(request, live.processes, preview.spec.port, target, add=add)
    except CoveError as exc:
        response = _error(exc)
    await response(scope, receive, send_with_headers)


async def _sandbox_api(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    preview: Preview,
    rest: str,
    raw_prefix: bytes,
) -> None:
    """Session previews: the sandbox API routes of this sandbox, as its workspace."""
    inner = dict(scope)
    prefix = f"/sbx/{preview.sandbox_id}"
    inner["path"] = prefix + rest
    raw = scope.get("raw_path") or scope["path"].encode()
    if raw_prefix and raw.startswith(raw_prefix):
        raw_rest = raw[len(raw_prefix) :]
    elif raw_prefix:  # the client escaped the prefix itself: use the decoded path
        raw_rest = rest.encode("utf-8")
    else:
        raw_rest = raw
    inner["raw_path"] = prefix.encode() + (raw_rest or b"/")
    inner["cove.workspace"] = preview.workspace  # read by api.common.workspace_of
    await app(inner, receive, send)


def _error(exc: CoveError) -> Response:
    return JSONResponse({"error": exc.message}, status_code=exc.status)


async def _deny_ws(scope: Scope, receive: Receive, send: Send, exc: CoveError) -> None:
    ws = WebSocket(scope, receive, send)
    try:
        await ws.send_denial_response(_error(exc))
    except Exception:  # no denial-response extension: a plain close
        await ws.close(code=4000 + exc.status, reason=exc.message[:120])

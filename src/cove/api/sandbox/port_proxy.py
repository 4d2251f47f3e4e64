"""/port/{n}/… on the sandbox URL: HTTP and WebSocket to 127.0.0.1:n inside the sandbox.

The host opens the upstream socket inside the sandbox's network namespace (runtime.connect), so
the sandbox needs no published ports and no network device. Bodies stream through in both
directions without buffering; h11 frames the upstream side. One upstream connection per request
(Connection: close): simple, and the setns socket costs well under a millisecond.
The cove credential that authenticated the request is not forwarded into the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import h11
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from cove.api.sandbox.common import guarded
from cove.api.sandbox.procs import processes_of, ws_guarded
from cove.domain.errors import InvalidRequest
from cove.services.processes import ProcessManager
from cove.services.processes.manager import BadGateway

HEAD_TIMEOUT_S = 300.0  # upstream must start answering within this
IDLE_TIMEOUT_S = 300.0  # and never go silent for longer while streaming a body
READ_CHUNK = 65536
WS_MAX_MESSAGE = 16 * 1024 * 1024
_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"host",
}
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _port(conn: HTTPConnection) -> int:
    raw = conn.path_params["port"]
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise InvalidRequest("port must be from 1 to 65535")
    return int(raw)


def _target(conn: HTTPConnection) -> str:
    path = "/" + conn.path_params.get("path", "")
    query = conn.scope.get("query_string", b"").decode("latin-1")
    return path + ("?" + query if query else "")


def _forward_headers(
    conn: HTTPConnection, port: int, drop: frozenset[bytes] = frozenset()
) -> list[tuple[bytes, bytes]]:
    """The client's headers minus hop-by-hop ones, the cove credential used and `drop`."""
    credential = (
        b"x-blaxel-authorization" if "x-blaxel-authorization" in conn.headers else b"authorization"
    )
    dropped = _HOP | {credential} | drop
    headers = [(k, v) for k, v in conn.scope["headers"] if k.lower() not in dropped]
    return [(b"host", f"localhost:{port}".encode()), *headers]


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader, timeout: float):  # type: ignore[no-untyped-def]
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await asyncio.wait_for(reader.read(READ_CHUNK), timeout))


@guarded
async def proxy_http(request: Request) -> Response:
    return await forward_http(request, processes_of(request), _port(request), _target(request))


async def forward_http(
    request: Request,
    processes: ProcessManager,
    port: int,
    target: str,
    drop: frozenset[bytes] = frozenset(),
    add: list[tuple[bytes, bytes]] | None = None,
) -> Response:
    """Send this request to 127.0.0.1:port in the sandbox; stream the answer back.
    Shared by /port/{n} and previews (api/preview/edge.py). BadGateway when nobody listens."""
    sock = await processes.connect(port)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        conn = h11.Connection(h11.CLIENT)
        headers = _forward_headers(request, port, drop) + (add or [])
        await _send_request(request, conn, writer, target, headers)
        head = await _next_event(conn, reader, HEAD_TIMEOUT_S)
        if not isinstance(head, h11.Response):
            raise BadGateway(f"port {port} closed the connection without an answer")
    except BaseException as exc:
        writer.close()
        if isinstance(exc, (h11.ProtocolError, OSError, TimeoutError)):
            raise BadGateway(f"port {port} did not answer with HTTP: {exc}") from None
        raise
    response = StreamingResponse(_body(conn, reader, writer), status_code=head.status_code)
    response.raw_headers = [
        (k, v) for k, v in head.headers if k.lower() not in _HOP and k.lower() != b"content-length"
    ]
    length = dict(head.headers).get(b"content-length")
    if length is not None and request.method != "HEAD":
        response.raw_headers.append((b"content-length", length))
    return response


async def _send_request(
    request: Request,
    conn: h11.Connection,
    writer: asyncio.StreamWriter,
    target: str,
    headers: list[tuple[bytes, bytes]],
) -> None:
    headers = headers + [(b"connection", b"close")]
    has_length = "content-length" in request.headers
    chunked = not has_length and "chunked" in request.headers.get("transfer-encoding", "")
    if chunked:
        headers.append((b"transfer-encoding", b"chunked"))
    writer.write(conn.send(h11.Request(method=request.method, target=target, headers=headers)))
    if has_length or chunked:
        async for chunk in request.stream():
            if chunk:
                writer.write(conn.send(h11.Data(data=chunk)))
                await writer.drain()
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()


async def _body(
    conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> AsyncIterator[bytes]:
    try:
        while True:
            try:
                event = await _next_event(conn, reader, IDLE_TIMEOUT_S)
            except (h11.ProtocolError, OSError, TimeoutError):
                return  # the head went out already: all we can do is end the body
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return
    finally:
        writer.close()


@ws_guarded
async def proxy_ws(ws: WebSocket) -> None:
    await forward_ws(ws, processes_of(ws), _port(ws), _target(ws))


async def forward_ws(
    ws: WebSocket,
    processes: ProcessManager,
    port: int,
    target: str,
    drop: frozenset[bytes] = frozenset(),
    add: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Bridge this WebSocket to 127.0.0.1:port in the sandbox (raise inside ws_guarded)."""
    from websockets.asyncio.client import connect

    sock = await processes.connect(port)
    headers = [
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in _forward_headers(ws, port, drop)[1:] + (add or [])
        if not k.startswith(b"sec-websocket") and k != b"origin"
    ]
    try:
        upstream = await connect(
            f"ws://localhost:{port}{target}",
            sock=sock,
            subprotocols=ws.scope.get("subprotocols") or None,  # type: ignore[arg-type]
            additional_headers=headers,
            max_size=WS_MAX_MESSAGE,
            open_timeout=10,
            compression=None,
        )
    except Exception as exc:
        sock.close()
        raise BadGateway(f"port {port} refused the WebSocket: {exc}") from None
    async with upstream:
        await ws.accept(subprotocol=upstream.subprotocol)
        await _bridge(ws, upstream)


async def _bridge(ws: WebSocket, upstream) -> None:  # type: ignore[no-untyped-def]
    async def client_to_upstream() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                if msg.get("text") is not None:
                    await upstream.send(msg["text"])
                elif msg.get("bytes") is not None:
                    await upstream.send(msg["bytes"])

    async def upstream_to_client() -> None:
        with contextlib.suppress(Exception):
            async for message in upstream:
                if isinstance(message, str):
                    await ws.send_text(message)
                else:
                    await ws.send_bytes(message)

    tasks = [
        asyncio.ensure_future(client_to_upstream()),
        asyncio.ensure_future(upstream_to_client()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await ws.close()


ROUTES = [
    ("/port/{port}", proxy_http, METHODS),
    ("/port/{port}/{path:path}", proxy_http, METHODS),
    ("/port/{port}", proxy_ws, ["WEBSOCKET"]),
    ("/port/{port}/{path:path}", proxy_ws, ["WEBSOCKET"]),
]

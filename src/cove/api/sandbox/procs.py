"""What the process-side sandbox routes share: the sandbox's ProcessManager, WebSocket errors."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketState

from cove.api.sandbox.common import running_sandbox
from cove.domain.errors import CoveError
from cove.services.processes import ProcessManager

log = logging.getLogger(__name__)


def processes_of(conn: HTTPConnection) -> ProcessManager:
    live = running_sandbox(conn)  # type: ignore[arg-type]  # only reads scope, headers, app
    assert live.processes is not None  # require_running guarantees it
    return live.processes


WsHandler = Callable[[WebSocket], Awaitable[None]]


def ws_guarded(handler: WsHandler) -> WsHandler:
    """Domain errors on a WebSocket: before the accept, an HTTP denial response in the
    sandbox API's shape {"error"} (uvicorn supports it); after, a close with 4000+status."""

    @functools.wraps(handler)
    async def wrapper(ws: WebSocket) -> None:
        try:
            await handler(ws)
        except CoveError as exc:
            await _close(ws, 4000 + exc.status, exc.message)
        except Exception:
            log.exception("websocket handler failed")
            await _close(ws, 1011, "internal error")

    return wrapper


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    try:
        if ws.application_state == WebSocketState.CONNECTING and code >= 4000:
            status = code - 4000
            await ws.send_denial_response(JSONResponse({"error": reason}, status_code=status))
        else:
            await ws.close(code=code, reason=reason[:120])
    except Exception:  # the client is gone already
        pass

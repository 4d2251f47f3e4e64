"""/terminal (a minimal HTML page) and /terminal/ws: an interactive shell on a pty.

Messages both ways are JSON: client → {"type": "input", "data"} | {"type": "resize", "cols",
"rows"}; server → {"type": "output", "data"}. The shell is a process named terminal-<random>,
or terminal-<sessionId> (visible in GET /process); the socket closes when the shell exits.
Session rules (reattach, when a shell is killed): services/processes/terminals.py.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import re
import secrets

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from cove.api.common import int_param
from cove.api.sandbox.common import guarded
from cove.api.sandbox.procs import processes_of, ws_guarded
from cove.domain.errors import InvalidRequest
from cove.services.processes import ExecRequest, Process, ProcessManager

_SHELL = re.compile(r"^[A-Za-z0-9_./-]{1,128}$")
_SESSION = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_SHELL = "if command -v bash >/dev/null; then exec bash -l; fi; exec sh -l"
MAX_INPUT = 1024 * 1024


def _session(ws: WebSocket) -> str | None:
    session = ws.query_params.get("sessionId") or None
    if session is not None and not _SESSION.match(session):
        raise InvalidRequest("sessionId must be 1-64 letters, digits, '-' or '_'")
    return session


def _request(ws: WebSocket, session: str | None) -> ExecRequest:
    shell = ws.query_params.get("shell") or ""
    if shell and not _SHELL.match(shell):
        raise InvalidRequest("shell must be a program name or path")
    return ExecRequest(
        command=f"exec {shell}" if shell else DEFAULT_SHELL,
        name="terminal-" + (session or secrets.token_hex(4)),
        working_dir=ws.query_params.get("workingDir") or "/",
        tty=True,
        cols=int_param(ws, "cols", 80, 1, 1000),  # type: ignore[arg-type]
        rows=int_param(ws, "rows", 24, 1, 1000),  # type: ignore[arg-type]
    )


@ws_guarded
async def terminal_ws(ws: WebSocket) -> None:
    processes = processes_of(ws)
    session = _session(ws)
    proc = await processes.terminals.attach(_request(ws, session), session is not None)
    try:
        await ws.accept()
        tasks = [
            asyncio.ensure_future(_output(ws, proc)),
            asyncio.ensure_future(_input(ws, processes, proc)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        processes.terminals.detach(proc, session is not None)
        with contextlib.suppress(Exception):
            await ws.close()


async def _output(ws: WebSocket, proc: Process) -> None:
    """Pty output → {"type": "output"} messages, until the shell is gone."""
    out = proc.output
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    cursor = out.start
    while True:
        chunks, cursor, _ = out.read(cursor)
        text = "".join(decoder.decode(chunk) for _, chunk in chunks)
        if text:
            await ws.send_text(json.dumps({"type": "output", "data": text}))
        if out.closed and cursor == out.end:
            break
        await out.wait(cursor, 30.0)


async def _input(ws: WebSocket, processes: ProcessManager, proc: Process) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            raw = await ws.receive_text()
            if len(raw) > MAX_INPUT:
                continue
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(msg, dict):
                continue
            if msg.get("type") == "input" and isinstance(msg.get("data"), str):
                with contextlib.suppress(Exception):
                    await processes.write_stdin(proc, msg["data"].encode())
            elif msg.get("type") == "resize":
                cols, rows = msg.get("cols"), msg.get("rows")
                if (
                    type(cols) is int
                    and type(rows) is int
                    and 0 < cols <= 1000
                    and 0 < rows <= 1000
                ):
                    processes.resize(proc, cols, rows)


_PAGE = """<!doctype html><meta charset=utf-8><title>cove terminal</title>
<style>body{margin:0;background:#111;color:#ddd;font:14px monospace}
pre{margin:0;padding:8px;white-space:pre-wrap;word-break:break-all}</style>
<pre id=t></pre><script>
const t=document.getElementById('t');
const u=location.href.replace(/^http/,'ws').replace(/\\/terminal\\/?(\\?.*)?$/,'/terminal/ws$1');
const ws=new WebSocket(u);
ws.onmessage=e=>{const m=JSON.parse(e.data);if(m.type==='output'){
 t.textContent+=m.data.replace(/\\x1b\\[[0-9;?]*[A-Za-z]/g,'');scrollTo(0,document.body.scrollHeight)}};
ws.onclose=()=>{t.textContent+='\\n[closed]'};
addEventListener('keydown',e=>{let d=e.key.length===1?e.key:{Enter:'\\r',Backspace:'\\x7f',
 Tab:'\\t',Escape:'\\x1b',ArrowUp:'\\x1b[A',ArrowDown:'\\x1b[B',ArrowRight:'\\x1b[C',
 ArrowLeft:'\\x1b[D'}[e.key];if(e.ctrlKey&&e.key.length===1)d=String.fromCharCode(e.key.toUpperCase().charCodeAt(0)-64);
 if(d){ws.send(JSON.stringify({type:'input',data:d}));e.preventDefault()}});
</script>"""


@guarded
async def page(request: Request) -> Response:
    processes_of(request)  # same authentication and 404/503 as the socket
    return HTMLResponse(_PAGE)


ROUTES = [
    ("/terminal", page, ["GET"]),
    ("/terminal/ws", terminal_ws, ["WEBSOCKET"]),
]

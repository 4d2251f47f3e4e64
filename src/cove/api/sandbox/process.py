"""/process — run commands in the sandbox (shapes: spec/sandbox-sdk-derived.json).

ROUTES also carries the streams, ports, port proxy and terminal routes of the other modules.
"""

from __future__ import annotations

import signal
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cove.api.common import int_param, json_object, typed
from cove.api.sandbox import port_proxy, ports, process_stream, terminal
from cove.api.sandbox.common import guarded
from cove.api.sandbox.procs import processes_of
from cove.domain.durations import iso
from cove.domain.errors import InvalidRequest
from cove.domain.sandbox import validate_envs
from cove.services.processes import VIEW_LIMIT, ExecRequest, Process

MAX_STDIN_WRITE = 16 * 1024 * 1024


def render(p: Process, tail: int | None = VIEW_LIMIT) -> dict[str, Any]:
    """ProcessResponse; get/list/exec carry the last 64 KiB of each stream (as the SDK says)."""
    req = p.request
    out = p.output
    return {
        "pid": str(p.pid),
        "name": p.name,
        "command": p.command,
        "status": p.status,
        "exitCode": p.exit_code if p.exit_code is not None else 0,
        "workingDir": p.working_dir,
        "startedAt": iso(p.started_at),
        "completedAt": iso(p.completed_at) if p.completed_at else "",
        "logs": out.logs.text(tail),
        "stdout": out.stdout.text(tail),
        "stderr": out.stderr.text(tail),
        "keepAlive": req.keep_alive,
        "restartOnFailure": req.restart_on_failure,
        "maxRestarts": req.max_restarts,
        "restartCount": p.restart_count,
        "stdin": req.stdin or req.tty,
        "tty": req.tty,
    }


def _ports(body: dict[str, Any]) -> list[int]:
    raw = typed(body, "waitForPorts", list, "") or []
    if len(raw) > 64 or not all(type(p) is int and 0 < p < 65536 for p in raw):
        raise InvalidRequest("waitForPorts must be a list of at most 64 ports (1-65535)")
    return raw


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _size(body: dict[str, Any]) -> tuple[int, int]:
    cols = _or(typed(body, "cols", int, ""), 80)
    rows = _or(typed(body, "rows", int, ""), 24)
    if not (0 < cols <= 1000 and 0 < rows <= 1000):
        raise InvalidRequest("cols and rows must be from 1 to 1000")
    return cols, rows


def parse_exec(body: dict[str, Any]) -> ExecRequest:
    command = typed(body, "command", str, "")
    if not command:
        raise InvalidRequest("command is required")
    timeout = typed(body, "timeout", (int, float), "")
    if timeout is not None and timeout < 0:
        raise InvalidRequest("timeout must be >= 0")
    max_restarts = typed(body, "maxRestarts", int, "") or 0
    if not 0 <= max_restarts <= 1000:
        raise InvalidRequest("maxRestarts must be from 0 to 1000")
    cols, rows = _size(body)
    return ExecRequest(
        command=command,
        name=typed(body, "name", str, "") or None,
        working_dir=typed(body, "workingDir", str, "") or "/",
        env=validate_envs(typed(body, "env", dict, "") or {}),
        wait_for_completion=bool(typed(body, "waitForCompletion", bool, "")),
        timeout=timeout,
        keep_alive=bool(typed(body, "keepAlive", bool, "")),
        restart_on_failure=bool(typed(body, "restartOnFailure", bool, "")),
        max_restarts=max_restarts,
        wait_for_ports=_ports(body),
        stdin=bool(typed(body, "stdin", bool, "")),
        tty=bool(typed(body, "tty", bool, "")),
        cols=cols,
        rows=rows,
    )


@guarded
async def execute(request: Request) -> Response:
    processes = processes_of(request)
    req = parse_exec(await json_object(request))
    if "text/event-stream" in request.headers.get("accept", ""):
        return await process_stream.exec_stream(processes, req, render)
    return JSONResponse(render(await processes.exec(req)))


@guarded
async def list_processes(request: Request) -> Response:
    return JSONResponse([render(p) for p in processes_of(request).list()])


@guarded
async def get(request: Request) -> Response:
    return JSONResponse(render(processes_of(request).get(request.path_params["proc"])))


@guarded
async def logs(request: Request) -> Response:
    out = processes_of(request).get(request.path_params["proc"]).output
    return JSONResponse(
        {"logs": out.logs.text(), "stdout": out.stdout.text(), "stderr": out.stderr.text()}
    )


@guarded
async def wait(request: Request) -> Response:
    processes = processes_of(request)
    proc = processes.get(request.path_params["proc"])
    timeout = int_param(request, "timeout", 60, 0, 3600)
    return JSONResponse(render(await processes.wait(proc, timeout)))


def _success(message: str, request: Request) -> Response:
    return JSONResponse({"message": message, "path": request.path_params["proc"]})


@guarded
async def stop(request: Request) -> Response:
    processes = processes_of(request)
    await processes.stop(processes.get(request.path_params["proc"]))
    return _success("process stopped", request)


@guarded
async def kill(request: Request) -> Response:
    processes = processes_of(request)
    await processes.kill(processes.get(request.path_params["proc"]), signal.SIGKILL, "killed")
    return _success("process killed", request)


@guarded
async def write_stdin(request: Request) -> Response:
    """Raw body bytes to the process's stdin, streamed through as they arrive."""
    processes = processes_of(request)
    proc = processes.get(request.path_params["proc"])
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_STDIN_WRITE:
            raise InvalidRequest(f"a stdin write is limited to {MAX_STDIN_WRITE} bytes")
        if chunk:
            await processes.write_stdin(proc, chunk)
    if total == 0:
        await processes.write_stdin(proc, b"")  # still 409 when there is no pipe
    return _success("stdin written", request)


@guarded
async def close_stdin(request: Request) -> Response:
    processes = processes_of(request)
    processes.close_stdin(processes.get(request.path_params["proc"]))
    return _success("stdin closed", request)


@guarded
async def resize(request: Request) -> Response:
    """cove extension: the window size of a process started with "tty": true."""
    processes = processes_of(request)
    proc = processes.get(request.path_params["proc"])
    processes.resize(proc, *_size(await json_object(request)))
    return _success("terminal resized", request)


ROUTES = [
    ("/process", execute, ["POST"]),
    ("/process", list_processes, ["GET"]),
    ("/process/{proc}", get, ["GET"]),
    ("/process/{proc}", stop, ["DELETE"]),
    ("/process/{proc}/kill", kill, ["DELETE"]),
    ("/process/{proc}/logs", logs, ["GET"]),
    ("/process/{proc}/logs/stream", process_stream.logs_stream, ["GET"]),
    ("/process/{proc}/wait", wait, ["GET"]),
    ("/process/{proc}/stdin", write_stdin, ["POST"]),
    ("/process/{proc}/stdin", close_stdin, ["DELETE"]),
    ("/process/{proc}/resize", resize, ["POST"]),
    *ports.ROUTES,
    *port_proxy.ROUTES,
    *terminal.ROUTES,
]

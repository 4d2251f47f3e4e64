"""/process — run commands in the sandbox (shapes: spec/sandbox-sdk-derived.json)."""

from __future__ import annotations

import signal
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cove.api.common import int_param, json_object, typed
from cove.api.sandbox.common import guarded, running_sandbox
from cove.domain.durations import iso
from cove.domain.errors import InvalidRequest
from cove.domain.sandbox import validate_envs
from cove.services.processes import ExecRequest, Process, ProcessManager


def render(p: Process) -> dict[str, Any]:
    return {
        "pid": str(p.pid),
        "name": p.name,
        "command": p.command,
        "status": p.status,
        "exitCode": p.exit_code if p.exit_code is not None else 0,
        "workingDir": p.working_dir,
        "startedAt": iso(p.started_at),
        "completedAt": iso(p.completed_at) if p.completed_at else "",
        "logs": p.logs.text(),
        "stdout": p.stdout.text(),
        "stderr": p.stderr.text(),
    }


def parse_exec(body: dict[str, Any]) -> ExecRequest:
    command = typed(body, "command", str, "")
    if not command:
        raise InvalidRequest("command is required")
    timeout = typed(body, "timeout", (int, float), "")
    if timeout is not None and timeout < 0:
        raise InvalidRequest("timeout must be >= 0")
    return ExecRequest(
        command=command,
        name=typed(body, "name", str, "") or None,
        working_dir=typed(body, "workingDir", str, "") or "/",
        env=validate_envs(typed(body, "env", dict, "") or {}),
        wait_for_completion=bool(typed(body, "waitForCompletion", bool, "")),
        timeout=timeout or None,
    )


def _processes(request: Request) -> ProcessManager:
    live = running_sandbox(request)
    assert live.processes is not None  # require_running guarantees it
    return live.processes


@guarded
async def execute(request: Request) -> Response:
    processes = _processes(request)
    proc = await processes.exec(parse_exec(await json_object(request)))
    return JSONResponse(render(proc))


@guarded
async def list_processes(request: Request) -> Response:
    return JSONResponse([render(p) for p in _processes(request).list()])


@guarded
async def get(request: Request) -> Response:
    return JSONResponse(render(_processes(request).get(request.path_params["proc"])))


@guarded
async def logs(request: Request) -> Response:
    p = _processes(request).get(request.path_params["proc"])
    return JSONResponse(
        {"logs": p.logs.text(), "stdout": p.stdout.text(), "stderr": p.stderr.text()}
    )


@guarded
async def wait(request: Request) -> Response:
    processes = _processes(request)
    proc = processes.get(request.path_params["proc"])
    timeout = int_param(request, "timeout", 60, 0, 3600)
    return JSONResponse(render(await processes.wait(proc, timeout)))


@guarded
async def stop(request: Request) -> Response:
    processes = _processes(request)
    proc = processes.get(request.path_params["proc"])
    await processes.kill(proc, signal.SIGTERM, "stopped")
    return JSONResponse({"message": "process stopped", "path": request.path_params["proc"]})


@guarded
async def kill(request: Request) -> Response:
    processes = _processes(request)
    proc = processes.get(request.path_params["proc"])
    await processes.kill(proc, signal.SIGKILL, "killed")
    return JSONResponse({"message": "process killed", "path": request.path_params["proc"]})


ROUTES = [
    ("/process", execute, ["POST"]),
    ("/process", list_processes, ["GET"]),
    ("/process/{proc}", get, ["GET"]),
    ("/process/{proc}", stop, ["DELETE"]),
    ("/process/{proc}/kill", kill, ["DELETE"]),
    ("/process/{proc}/logs", logs, ["GET"]),
    ("/process/{proc}/wait", wait, ["GET"]),
]

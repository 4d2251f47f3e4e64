"""/network/process/{pid}/ports and port monitors (Blaxel paths, plus seed 000's v1 shape
/network/process/{pid}/ports/monitor). {pid} is a process pid or name."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cove.api.common import json_object, typed
from cove.api.sandbox.common import guarded
from cove.api.sandbox.procs import processes_of
from cove.domain.errors import InvalidRequest


@guarded
async def list_ports(request: Request) -> Response:
    processes = processes_of(request)
    proc = processes.get(request.path_params["pid"])
    infos = await processes.ports(proc)
    ports = sorted({(i.port, i.address, i.family) for i in infos})
    return JSONResponse(
        {
            "pid": proc.pid,
            "ports": [{"port": p, "address": a, "protocol": f} for p, a, f in ports],
        }
    )


@guarded
async def start_monitor(request: Request) -> Response:
    processes = processes_of(request)
    proc = processes.get(request.path_params["pid"])
    callback = typed(await json_object(request), "callback", str, "")
    if not callback:
        raise InvalidRequest("callback is required")
    if proc.status != "running":
        raise InvalidRequest(f"process {proc.name!r} is not running")
    processes.monitors.start(proc, callback)
    return JSONResponse({"pid": proc.pid, "message": "port monitoring started"})


@guarded
async def stop_monitor(request: Request) -> Response:
    processes = processes_of(request)
    proc = processes.get(request.path_params["pid"])
    stopped = processes.monitors.stop(proc)
    message = "port monitoring stopped" if stopped else "no port monitor was running"
    return JSONResponse({"pid": proc.pid, "message": message})


ROUTES = [
    ("/network/process/{pid}/ports", list_ports, ["GET"]),
    ("/network/process/{pid}/monitor", start_monitor, ["POST"]),
    ("/network/process/{pid}/monitor", stop_monitor, ["DELETE"]),
    ("/network/process/{pid}/ports/monitor", start_monitor, ["POST"]),
    ("/network/process/{pid}/ports/monitor", stop_monitor, ["DELETE"]),
]

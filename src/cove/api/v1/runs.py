"""/v1/run and /v1/runs — ephemeral runs (seed 000 "Run Code"). Parses, calls the service, renders.

POST /v1/run answers when the run has ended (up to its timeout, plus package installs).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cove.api.common import guarded, int_param, json_object, only_fields, typed, workspace_of
from cove.api.v1.sandboxes import error
from cove.domain.durations import iso
from cove.domain.errors import InvalidRequest
from cove.domain.runs import Run, run_timeout
from cove.services.runs import RunRequest, RunService

_FIELDS = {"language", "code", "files", "entrypoint", "packages", "timeout"}
LIST_LIMIT, MAX_LIST_LIMIT = 50, 500
LIST_OUTPUT = 64 * 1024  # a list shows the last 64 Ki characters of stdout/stderr; GET one: all


def _service(request: Request) -> RunService:
    return request.app.state.runs


def render(run: Run, output_limit: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": run.id,
        "status": run.status,
        "language": run.language,
        "stdout": _cut(run.stdout, output_limit),
        "stderr": _cut(run.stderr, output_limit),
        "exitCode": run.exit_code,
        "durationMs": run.duration_ms,
        "createdAt": iso(run.created_at),
        "completedAt": iso(run.completed_at),
    }
    if run.error:  # cove extension: why a run did not complete (set-up, timeout, platform)
        out["error"] = run.error
    return out


def _cut(text: str, limit: int | None) -> str:
    return text if limit is None or len(text) <= limit else text[-limit:]


def parse_run(body: dict[str, Any]) -> RunRequest:
    only_fields(body, _FIELDS)
    language = typed(body, "language", str, "")
    if language is None:
        raise InvalidRequest("language is required")
    packages = typed(body, "packages", list, "") or []
    return RunRequest(
        language=language,
        code=typed(body, "code", str, ""),
        files=typed(body, "files", dict, ""),
        entrypoint=typed(body, "entrypoint", str, ""),
        packages=packages,
        timeout_s=run_timeout(body.get("timeout")),
    )


@guarded(error)
async def create(request: Request) -> Response:
    workspace = workspace_of(request)
    req = parse_run(await json_object(request))
    run = await _service(request).run(workspace, req)
    return JSONResponse(render(run))


@guarded(error)
async def list_runs(request: Request) -> Response:
    workspace = workspace_of(request)
    limit = int_param(request, "limit", LIST_LIMIT, 1, MAX_LIST_LIMIT)
    runs = await _service(request).recent(workspace, limit)
    return JSONResponse({"runs": [render(r, LIST_OUTPUT) for r in runs]})


@guarded(error)
async def get(request: Request) -> Response:
    run = await _service(request).get(workspace_of(request), request.path_params["id"])
    return JSONResponse(render(run))


routes = [
    Route("/v1/run", create, methods=["POST"]),
    Route("/v1/runs", list_runs, methods=["GET"]),
    Route("/v1/runs/{id}", get, methods=["GET"]),
]

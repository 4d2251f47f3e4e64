"""/v1/jobs — seed 000 "Jobs": deploy (JSON files map, or a zip / tar.gz body with the metadata as
query parameters), list, get, PUT (a new revision), DELETE; executions: trigger, list, get,
cancel (DELETE). Every call is charged the nominal price before it acts (given back if it fails).
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cove.api.common import (
    guarded,
    int_param,
    json_object,
    only_fields,
    read_body,
    typed,
    workspace_of,
)
from cove.api.v1.sandboxes import error
from cove.domain.durations import iso
from cove.domain.errors import InvalidRequest
from cove.domain.jobs import Execution, Job, RuntimeConfig, next_tick, parse_schedule, stats
from cove.domain.pricing import NOMINAL_MICROS
from cove.domain.programs import clean_files
from cove.services.jobs import DeployJob, JobService, NewExecution
from cove.services.jobs.archive import MAX_UPLOAD_BYTES, extract, is_archive

T = TypeVar("T")
_FIELDS = {"name", "files", "runtime", "entrypoint", "runtimeConfig", "schedule", "envs"}
_EXTRA = {"scheduleTasks", "enabled"}  # cove extensions
_CONFIG = {"memory", "timeout", "maxRetries", "maxConcurrentTasks"}
_QUERY = {"name", "runtime", "entrypoint", "schedule", "envs", *_CONFIG}
_EXEC_FIELDS = {"tasks", "env", "memory"}


def _service(request: Request) -> JobService:
    return request.app.state.jobs


async def paid(request: Request, workspace: str, what: str, op: Callable[[], Awaitable[T]]) -> T:
    """The nominal price of a job call, charged first (402 = nothing done), void on failure."""
    return await request.app.state.billing.paid(workspace, NOMINAL_MICROS, "job", what, op)


# -- parsing ----------------------------------------------------------------------------------


async def parse_deploy(request: Request, name: str | None) -> DeployJob:
    if is_archive(request.headers.get("content-type", "")):
        return await _parse_upload(request, name)
    body = await json_object(request)
    only_fields(body, _FIELDS | _EXTRA)
    if "files" not in body:
        raise InvalidRequest("files is required: a map of path to content")
    cfg = typed(body, "runtimeConfig", dict, "") or {}
    only_fields(cfg, _CONFIG, "runtimeConfig: ")
    return DeployJob(
        files=clean_files(body["files"]),
        name=_name(typed(body, "name", str, ""), name),
        runtime=typed(body, "runtime", str, ""),
        entrypoint=typed(body, "entrypoint", str, ""),
        config=_config(cfg),
        envs=typed(body, "envs", dict, "") or {},
        schedule=parse_schedule(body.get("schedule")),
        schedule_tasks=typed(body, "scheduleTasks", list, ""),
        enabled=body.get("enabled") is not False,
    )


async def _parse_upload(request: Request, name: str | None) -> DeployJob:
    q = request.query_params
    unknown = set(q) - _QUERY - {f"runtimeConfig.{k}" for k in _CONFIG}
    if unknown:
        raise InvalidRequest(f"unknown query parameter(s): {', '.join(sorted(unknown))}")
    cfg = {k: _number(q.get(k) or q.get(f"runtimeConfig.{k}")) for k in _CONFIG}
    envs = q.get("envs")
    try:
        envs_map = json.loads(envs) if envs else {}
    except ValueError:
        raise InvalidRequest('envs must be a JSON object: envs={"KEY":"value"}') from None
    if not isinstance(envs_map, dict):
        raise InvalidRequest('envs must be a JSON object: envs={"KEY":"value"}')
    body = await read_body(request, MAX_UPLOAD_BYTES, "the upload")
    kind = request.headers["content-type"]
    files = await asyncio.to_thread(extract, body, kind)  # unpacking stays off the loop
    return DeployJob(
        files=files,
        name=_name(q.get("name"), name),
        runtime=q.get("runtime") or None,
        entrypoint=q.get("entrypoint") or None,
        config=_config({k: v for k, v in cfg.items() if v is not None}),
        envs=envs_map,
        schedule=parse_schedule(q.get("schedule")),
    )


def _name(given: str | None, path_name: str | None) -> str:
    if path_name is not None:  # PUT: the path names the job; a body name must agree
        if given not in (None, path_name):
            raise InvalidRequest(f"name {given!r} does not match the job {path_name!r}")
        return path_name
    if not given:
        raise InvalidRequest("name is required")
    return given


def _config(raw: dict[str, Any]) -> RuntimeConfig:
    defaults = RuntimeConfig()
    return RuntimeConfig(
        memory_mb=raw.get("memory", defaults.memory_mb),
        timeout_s=raw.get("timeout", defaults.timeout_s),
        max_retries=raw.get("maxRetries", defaults.max_retries),
        max_concurrent_tasks=raw.get("maxConcurrentTasks"),
    )


def _number(raw: str | None) -> int | str | None:
    if raw is None or raw == "":
        return None
    return int(raw) if raw.isdigit() else raw  # not a number: validation names the field


# -- rendering --------------------------------------------------------------------------------


def render_job(job: Job) -> dict[str, Any]:
    spec, cfg = job.spec, job.spec.config
    after = job.last_tick or job.created_at
    return {
        "id": job.id,
        "name": job.name,
        "status": "deployed" if spec.enabled else "disabled",
        "runtime": spec.runtime,
        "entrypoint": spec.entrypoint,
        "runtimeConfig": {
            "memory": cfg.memory_mb,
            "timeout": cfg.timeout_s,
            "maxRetries": cfg.max_retries,
            "maxConcurrentTasks": cfg.max_concurrent_tasks,
        },
        "schedule": spec.schedule,
        "scheduleTasks": spec.schedule_tasks if spec.schedule else None,
        "nextRunAt": iso(next_tick(spec.schedule, after)) if spec.schedule else None,
        "envs": spec.envs,
        "files": job.files,
        "revision": job.revision,
        "createdAt": iso(job.created_at),
        "updatedAt": iso(job.updated_at),
    }


def render_execution(e: Execution, logs: bool = True) -> dict[str, Any]:
    return {
        "id": e.id,
        "job": e.job_name,
        "revision": e.revision,
        "status": e.status.value,
        "trigger": e.trigger,
        "scheduledAt": iso(e.scheduled_for),
        "taskCount": len(e.tasks),
        "parallelism": e.parallelism,
        "memory": e.memory_mb,
        "timeout": e.timeout_s,
        "maxRetries": e.max_retries,
        "env": {k: "***" for k in e.env_override},  # override values are not echoed
        "stats": stats(e),
        "error": e.error,
        "tasks": [_task(t, logs) for t in e.tasks],
        "createdAt": iso(e.created_at),
        "startedAt": iso(e.started_at),
        "completedAt": iso(e.completed_at) if e.status.done else None,
        "updatedAt": iso(e.updated_at),
    }


def _task(t: Any, logs: bool) -> dict[str, Any]:
    out = {
        "index": t.index,
        "name": f"task-{t.index}",
        "status": t.status.value,
        "payload": t.payload,
        "attempts": t.attempts,
        "retries": t.retries,
        "exitCode": t.exit_code,
        "error": t.error,
        "startedAt": iso(t.started_at),
        "completedAt": iso(t.completed_at),
        "durationMs": t.duration_ms,
    }
    if logs:
        out["stdout"], out["stderr"] = t.stdout, t.stderr
    return out


# -- handlers ---------------------------------------------------------------------------------


@guarded(error)
async def deploy(request: Request) -> Response:
    workspace = workspace_of(request)
    req = await parse_deploy(request, None)
    op = functools.partial(_service(request).deploy, workspace, req)
    job = await paid(request, workspace, f"deploy {req.name}", op)
    return JSONResponse(render_job(job), status_code=201)


@guarded(error)
async def list_jobs(request: Request) -> Response:
    workspace = workspace_of(request)
    jobs = await paid(
        request, workspace, "list", functools.partial(_service(request).list, workspace)
    )
    return JSONResponse({"jobs": [render_job(j) for j in jobs]})


@guarded(error)
async def get(request: Request) -> Response:
    workspace = workspace_of(request)
    name = request.path_params["name"]
    op = functools.partial(_service(request).get, workspace, name)
    return JSONResponse(render_job(await paid(request, workspace, f"get {name}", op)))


@guarded(error)
async def update(request: Request) -> Response:
    workspace = workspace_of(request)
    name = request.path_params["name"]
    req = await parse_deploy(request, name)
    op = functools.partial(_service(request).update, workspace, name, req)
    return JSONResponse(render_job(await paid(request, workspace, f"update {name}", op)))


@guarded(error)
async def delete(request: Request) -> Response:
    workspace = workspace_of(request)
    name = request.path_params["name"]
    op = functools.partial(_service(request).delete, workspace, name)
    await paid(request, workspace, f"delete {name}", op)
    return Response(status_code=204)


@guarded(error)
async def execute(request: Request) -> Response:
    workspace = workspace_of(request)
    name = request.path_params["name"]
    body = await json_object(request)
    only_fields(body, _EXEC_FIELDS)
    if "tasks" not in body:
        raise InvalidRequest("tasks is required: an array of task payloads")
    req = NewExecution(
        tasks=body["tasks"], env=typed(body, "env", dict, "") or {}, memory=body.get("memory")
    )
    op = functools.partial(_service(request).execute, workspace, name, req)
    execution = await paid(request, workspace, f"execute {name}", op)
    return JSONResponse(render_execution(execution), status_code=202)


@guarded(error)
async def list_executions(request: Request) -> Response:
    workspace = workspace_of(request)
    name = request.path_params["name"]
    limit = int_param(request, "limit", 100, 1, 1000)
    offset = int_param(request, "offset", 0, 0, 10**9)
    op = functools.partial(_service(request).list_executions, workspace, name, limit, offset)
    page, total = await paid(request, workspace, f"list executions {name}", op)
    return JSONResponse(
        {"executions": [render_execution(e, logs=False) for e in page], "total": total}
    )


@guarded(error)
async def get_execution(request: Request) -> Response:
    workspace = workspace_of(request)
    name, exec_id = request.path_params["name"], request.path_params["id"]
    op = functools.partial(_service(request).get_execution, workspace, name, exec_id)
    return JSONResponse(
        render_execution(await paid(request, workspace, f"get execution {exec_id}", op))
    )


@guarded(error)
async def cancel(request: Request) -> Response:
    workspace = workspace_of(request)
    name, exec_id = request.path_params["name"], request.path_params["id"]
    op = functools.partial(_service(request).cancel, workspace, name, exec_id)
    return JSONResponse(render_execution(await paid(request, workspace, f"cancel {exec_id}", op)))


routes = [
    Route("/v1/jobs", deploy, methods=["POST"]),
    Route("/v1/jobs", list_jobs, methods=["GET"]),
    Route("/v1/jobs/{name}", get, methods=["GET"]),
    Route("/v1/jobs/{name}", update, methods=["PUT"]),
    Route("/v1/jobs/{name}", delete, methods=["DELETE"]),
    Route("/v1/jobs/{name}/executions", execute, methods=["POST"]),
    Route("/v1/jobs/{name}/executions", list_executions, methods=["GET"]),
    Route("/v1/jobs/{name}/executions/{id}", get_execution, methods=["GET"]),
    Route("/v1/jobs/{name}/executions/{id}", cancel, methods=["DELETE"]),
]

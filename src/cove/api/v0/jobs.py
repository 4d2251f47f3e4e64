"""/v0/jobs — the Blaxel jobs model (Job, JobExecution, JobExecutionTask of the SDK), over the
same jobs as /v1/jobs. Statuses use the SDK's enums: a job is DEPLOYED; an execution pending,
running, cancelling, cancelled, succeeded or failed; a task pending, running, succeeded, failed
(a timed-out task is failed with reason "Timeout") or cancelled.

Blaxel builds a job's image from a repository (`bl deploy`); cove takes the code in the Job
itself, as the extension `spec.source = {"files": {path: content}, "runtime", "entrypoint"}`
(omit `files` on a PUT to keep the code).
"""

from __future__ import annotations

import base64
import functools
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cove.api.common import guarded, int_param, json_object, typed, workspace_of
from cove.api.v0 import wire
from cove.api.v1.jobs import paid
from cove.domain.durations import iso
from cove.domain.errors import CoveError, InvalidRequest
from cove.domain.jobs import (
    Execution,
    Job,
    RuntimeConfig,
    Task,
    TaskStatus,
    parse_schedule,
    stats,
)
from cove.domain.programs import clean_files
from cove.services.jobs import DeployJob, JobService, NewExecution

_TASK_STATUS = {TaskStatus.TIMEOUT: "failed"}  # the SDK's task enum has no timeout
_REASON = {
    TaskStatus.SUCCEEDED: "Succeeded",
    TaskStatus.FAILED: "Failed",
    TaskStatus.TIMEOUT: "Timeout",
    TaskStatus.CANCELLED: "Cancelled",
}


def _error(exc: CoveError) -> Response:
    body = {"error": exc.message, "code": exc.status, "message": exc.message}
    body.update(getattr(exc, "details", {}))  # 402: price, currency, balance, action
    return JSONResponse(body, status_code=exc.status)


def _service(request: Request) -> JobService:
    return request.app.state.jobs


# -- Job ------------------------------------------------------------------------------------


def parse_job(body: dict[str, Any], path_name: str | None) -> DeployJob:
    metadata = typed(body, "metadata", dict, "") or {}
    spec = typed(body, "spec", dict, "") or {}
    runtime = typed(spec, "runtime", dict, "spec.") or {}
    source = typed(spec, "source", dict, "spec.") or {}
    name = typed(metadata, "name", str, "metadata.")
    if path_name is not None and name not in (None, path_name):
        raise InvalidRequest(f"metadata.name {name!r} does not match the job {path_name!r}")
    files = source.get("files")
    if path_name is None and not isinstance(files, dict):
        raise InvalidRequest("spec.source.files is required: the job's code as {path: content}")
    schedule, tasks = _cron(typed(spec, "triggers", list, "spec.") or [])
    defaults = RuntimeConfig()
    return DeployJob(
        files=clean_files(files, "spec.source.files") if isinstance(files, dict) else None,
        name=path_name or name,
        runtime=typed(source, "runtime", str, "spec.source."),
        entrypoint=typed(source, "entrypoint", str, "spec.source."),
        config=RuntimeConfig(
            memory_mb=runtime.get("memory", defaults.memory_mb),
            timeout_s=runtime.get("timeout", defaults.timeout_s),
            max_retries=runtime.get("maxRetries", defaults.max_retries),
            max_concurrent_tasks=runtime.get("maxConcurrentTasks"),
        ),
        envs=wire.envs(typed(runtime, "envs", list, "spec.runtime.") or []),
        schedule=schedule,
        schedule_tasks=tasks,
        enabled=spec.get("enabled") is not False,
        labels=typed(metadata, "labels", dict, "metadata.") or {},
        display_name=typed(metadata, "displayName", str, "metadata."),
    )


def _cron(triggers: list[Any]) -> tuple[str | None, list[Any] | None]:
    crons = [t for t in triggers if isinstance(t, dict) and t.get("type") == "cron"]
    if len(crons) != len(triggers) or len(crons) > 1:
        raise InvalidRequest("spec.triggers: cove runs at most one trigger, of type cron")
    if not crons or crons[0].get("enabled") is False:
        return None, None
    config = typed(crons[0], "configuration", dict, "spec.triggers[0].") or {}
    schedule = parse_schedule(config.get("schedule"))
    if schedule is None:
        raise InvalidRequest("spec.triggers[0].configuration.schedule is required")
    return schedule, typed(config, "tasks", list, "spec.triggers[0].configuration.")


def render_job(job: Job) -> dict[str, Any]:
    spec, cfg = job.spec, job.spec.config
    runtime = {
        "generation": "mk3",
        "memory": cfg.memory_mb,
        "timeout": cfg.timeout_s,
        "maxRetries": cfg.max_retries,
        "envs": [{"name": k, "value": v} for k, v in spec.envs.items()],
    }
    if cfg.max_concurrent_tasks is not None:
        runtime["maxConcurrentTasks"] = cfg.max_concurrent_tasks
    triggers = []
    if spec.schedule:
        configuration = {"schedule": spec.schedule, "tasks": spec.schedule_tasks}
        triggers.append(
            {"id": "cron", "type": "cron", "enabled": True, "configuration": configuration}
        )
    metadata = {
        "name": job.name,
        "displayName": spec.display_name or job.name,
        "labels": spec.labels,
        "workspace": job.workspace,
        "createdAt": iso(job.created_at),
        "updatedAt": iso(job.updated_at),
    }
    return {
        "metadata": metadata,
        "spec": {
            "enabled": spec.enabled,
            "region": "local",
            "revision": {"active": str(job.revision)},
            "runtime": runtime,
            "triggers": triggers,
            "source": {"runtime": spec.runtime, "entrypoint": spec.entrypoint, "files": job.files},
        },
        "status": "DEPLOYED",
        "events": [],
    }


# -- JobExecution ---------------------------------------------------------------------------


def render_execution(e: Execution) -> dict[str, Any]:
    return {
        "metadata": {
            "id": e.id,
            "job": e.job_name,
            "workspace": e.workspace,
            "cluster": "local",
            "createdAt": iso(e.created_at),
            "startedAt": iso(e.started_at),
            "completedAt": iso(e.completed_at) if e.status.done else None,
            "updatedAt": iso(e.updated_at),
        },
        "spec": {
            "taskCount": len(e.tasks),
            "parallelism": e.parallelism,
            "timeout": e.timeout_s,
            "envOverride": {k: "***" for k in e.env_override},
            **({"memoryOverride": e.memory_override} if e.memory_override else {}),
        },
        "status": e.status.value,
        "stats": stats(e),
        "tasks": [render_task(e, t) for t in e.tasks],
    }


def render_task(e: Execution, t: Task) -> dict[str, Any]:
    out: dict[str, Any] = {
        "metadata": {
            "name": f"task-{t.index}",
            "createdAt": iso(e.created_at),
            "scheduledAt": iso(e.created_at),
            "startedAt": iso(t.started_at),
            "completedAt": iso(t.completed_at),
            "updatedAt": iso(t.completed_at or t.started_at or e.created_at),
        },
        "spec": {"maxRetries": e.max_retries, "timeout": f"{e.timeout_s}s"},
        "status": _TASK_STATUS.get(t.status, t.status.value),
        "conditions": [],
        # cove extensions: what the task was given and what it printed
        "index": t.index,
        "payload": t.payload,
        "attempts": t.attempts,
        "retries": t.retries,
        "exitCode": t.exit_code,
        "logs": {"stdout": t.stdout, "stderr": t.stderr},
    }
    if t.status in _REASON:
        ok = t.status == TaskStatus.SUCCEEDED
        message = t.error or (f"exit code {t.exit_code}" if t.exit_code is not None else "")
        out["conditions"].append(
            {
                "type": "Completed",
                "state": "True" if ok else "False",
                "reason": _REASON[t.status],
                "message": message,
                "severity": "Info" if ok else "Error",
            }
        )
    return out


# -- handlers -------------------------------------------------------------------------------


@guarded(_error)
async def create(request: Request) -> Response:
    workspace = workspace_of(request)
    req = parse_job(await json_object(request), None)
    op = functools.partial(_service(request).deploy, workspace, req)
    return JSONResponse(render_job(await paid(request, workspace, f"deploy {req.name}", op)))


@guarded(_error)
async def list_jobs(request: Request) -> Response:
    workspace = workspace_of(request)
    op = functools.partial(_service(request).list, workspace)
    jobs = [render_job(j) for j in await paid(request, workspace, "list", op)]
    if not _paged(request):
        return JSONResponse(jobs)
    start = _cursor(request.query_params.get("cursor")) or 0
    limit = int_param(request, "limit", 100, 1, 1000)
    return JSONResponse(_page(jobs[start : start + limit], start + limit, len(jobs)))


@guarded(_error)
async def get(request: Request) -> Response:
    workspace, name = workspace_of(request), request.path_params["name"]
    op = functools.partial(_service(request).get, workspace, name)
    return JSONResponse(render_job(await paid(request, workspace, f"get {name}", op)))


@guarded(_error)
async def update(request: Request) -> Response:
    workspace, name = workspace_of(request), request.path_params["name"]
    req = parse_job(await json_object(request), name)
    op = functools.partial(_service(request).update, workspace, name, req)
    return JSONResponse(render_job(await paid(request, workspace, f"update {name}", op)))


@guarded(_error)
async def delete(request: Request) -> Response:
    workspace, name = workspace_of(request), request.path_params["name"]
    op = functools.partial(_service(request).delete, workspace, name)
    job = await paid(request, workspace, f"delete {name}", op)
    return JSONResponse({**render_job(job), "status": "DELETING"})


@guarded(_error)
async def revisions(request: Request) -> Response:
    workspace, name = workspace_of(request), request.path_params["name"]
    op = functools.partial(_service(request).get, workspace, name)
    job = await paid(request, workspace, f"revisions {name}", op)
    current = {"id": str(job.revision), "active": True, "createdAt": iso(job.updated_at)}
    return JSONResponse([{**current, "status": "DEPLOYED", "trafficPercent": 100}])


@guarded(_error)
async def execute(request: Request) -> Response:
    workspace, name = workspace_of(request), request.path_params["name"]
    body = await json_object(request, required=False)
    req = NewExecution(
        tasks=body["tasks"] if body.get("tasks") is not None else [{}],
        env=typed(body, "env", dict, "") or {},
        memory=body.get("memory"),
        execution_id=typed(body, "executionId", str, ""),
    )
    op = functools.partial(_service(request).execute, workspace, name, req)
    e = await paid(request, workspace, f"execute {name}", op)
    out = {
        "executionId": e.id,
        "id": typed(body, "id", str, "") or str(uuid.uuid4()),
        "jobId": e.job_name,
        "workspaceId": workspace,
        "tasks": [t.payload for t in e.tasks],
    }
    return JSONResponse(out)


@guarded(_error)
async def list_executions(request: Request) -> Response:
    workspace, name = workspace_of(request), request.path_params["name"]
    limit = int_param(request, "limit", 20, 1, 1000)
    start = _cursor(request.query_params.get("cursor"))
    start = int_param(request, "offset", 0, 0, 10**9) if start is None else start
    op = functools.partial(_service(request).list_executions, workspace, name, limit, start)
    page, total = await paid(request, workspace, f"list executions {name}", op)
    items = [render_execution(e) for e in page]
    if not _paged(request):
        return JSONResponse(items)
    return JSONResponse(_page(items, start + limit, total))


@guarded(_error)
async def get_execution(request: Request) -> Response:
    e = await _execution_call(request, "get_execution")
    return JSONResponse(render_execution(e))


@guarded(_error)
async def cancel(request: Request) -> Response:
    e = await _execution_call(request, "cancel")
    return JSONResponse(render_execution(e))


@guarded(_error)
async def list_tasks(request: Request) -> Response:
    e = await _execution_call(request, "get_execution")
    start = _cursor(request.query_params.get("cursor")) or 0
    limit = int_param(request, "limit", 100, 1, 1000)
    tasks = [render_task(e, t) for t in e.tasks]
    return JSONResponse(_page(tasks[start : start + limit], start + limit, len(tasks)))


async def _execution_call(request: Request, method: str) -> Execution:
    workspace, name = workspace_of(request), request.path_params["name"]
    exec_id = request.path_params["id"]
    op = functools.partial(getattr(_service(request), method), workspace, name, exec_id)
    return await paid(request, workspace, f"{method} {exec_id}", op)


def _paged(request: Request) -> bool:
    q = request.query_params
    return "limit" in q or "cursor" in q or "blaxel-version" in request.headers


def _page(items: list[Any], next_start: int, total: int) -> dict[str, Any]:
    more = next_start < total
    cursor = base64.urlsafe_b64encode(str(next_start).encode()).decode() if more else None
    meta = {"hasMore": more, "nextCursor": cursor, "total": total, "totalIsPartial": False}
    return {"data": items, "meta": meta}


def _cursor(raw: str | None) -> int | None:
    if not raw:
        return None
    try:
        start = int(base64.urlsafe_b64decode(raw.encode()).decode())
    except ValueError:
        start = -1
    if start < 0:  # a negative start would slice from the end
        raise InvalidRequest("cursor is not one this server handed out")
    return start


routes = [
    Route("/v0/jobs", create, methods=["POST"]),
    Route("/v0/jobs", list_jobs, methods=["GET"]),
    Route("/v0/jobs/{name}", get, methods=["GET"]),
    Route("/v0/jobs/{name}", update, methods=["PUT"]),
    Route("/v0/jobs/{name}", delete, methods=["DELETE"]),
    Route("/v0/jobs/{name}/revisions", revisions, methods=["GET"]),
    Route("/v0/jobs/{name}/executions", execute, methods=["POST"]),
    Route("/v0/jobs/{name}/executions", list_executions, methods=["GET"]),
    Route("/v0/jobs/{name}/executions/{id}", get_execution, methods=["GET"]),
    Route("/v0/jobs/{name}/executions/{id}", cancel, methods=["DELETE"]),
    Route("/v0/jobs/{name}/executions/{id}/tasks", list_tasks, methods=["GET"]),
]

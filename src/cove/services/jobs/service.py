"""Jobs use cases, shared by /v1/jobs and /v0/jobs: deploy, revise, delete, execute, cron.

A job's code is stored with it; an execution loads the revision current when it starts and keeps
it (a PUT while it runs changes only later executions). Executions in flight when cove stops
(SIGTERM or a crash) end as failed: running tasks fail with the reason, pending ones are
cancelled, and the job sandboxes a crash left behind are deleted at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cove.domain.durations import utcnow
from cove.domain.errors import Conflict, CoveError, NotFound
from cove.domain.job_programs import detect_runtime, job_program
from cove.domain.jobs import (
    ExecStatus,
    Execution,
    Job,
    JobSpec,
    RuntimeConfig,
    Task,
    TaskStatus,
    due_tick,
    memory_override,
    new_execution_id,
    new_job_id,
    validate_config,
    validate_execution_id,
    validate_tasks,
)
from cove.domain.pricing import NOMINAL_MICROS
from cove.domain.sandbox import validate_envs, validate_name
from cove.services.billing import Billing
from cove.services.jobs.runner import ExecutionRun
from cove.services.sandboxes import SandboxService
from cove.services.workloads import Workloads
from cove.store.jobs import JobRepo

log = logging.getLogger("cove.jobs")

KEEP_EXECUTIONS = 200  # per job: older finished executions are dropped
CANCEL_WAIT_S = 15.0  # a DELETE waits this long for running tasks' sandboxes to go


@dataclass(frozen=True)
class DeployJob:
    """A deploy (POST) or a new revision (PUT); files None on a PUT keeps the code."""

    files: dict[str, bytes] | None
    name: str | None = None
    runtime: str | None = None
    entrypoint: str | None = None
    config: RuntimeConfig = field(default_factory=RuntimeConfig)
    envs: dict[str, str] = field(default_factory=dict)
    schedule: str | None = None
    schedule_tasks: list[Any] | None = None
    enabled: bool = True
    labels: dict[str, str] = field(default_factory=dict)
    display_name: str | None = None


@dataclass(frozen=True)
class NewExecution:
    tasks: Any
    env: dict[str, str] = field(default_factory=dict)
    memory: Any = None  # MB, only downwards; validated against the job
    execution_id: str | None = None
    trigger: str = "api"
    scheduled_for: datetime | None = None  # cron: the tick


class JobService:
    def __init__(
        self,
        repo: JobRepo,
        workloads: Workloads,
        sandboxes: SandboxService,
        billing: Billing,
        concurrency: int,
    ) -> None:
        self._repo = repo
        self._workloads = workloads
        self._sandboxes = sandboxes
        self._billing = billing
        self._concurrency = max(1, concurrency)
        self._runs: dict[tuple[str, str], ExecutionRun] = {}  # (job id, execution id)
        self._background: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # job writes and cron passes: a revision never forks

    # -- jobs -----------------------------------------------------------------------------

    async def deploy(self, workspace: str, req: DeployJob) -> Job:
        if req.files is None or req.name is None:
            raise ValueError("a deploy has a name and files")
        name = validate_name(req.name)
        spec = self._spec(req, req.files)
        now = utcnow()
        job = Job(new_job_id(), workspace, name, spec, sorted(req.files), 1, now, now)
        job.last_tick = now if spec.schedule else None
        async with self._lock:
            await self._repo.insert(job, req.files)
        return job

    async def update(self, workspace: str, name: str, req: DeployJob) -> Job:
        async with self._lock:
            job = await self.get(workspace, name)
            files = req.files if req.files is not None else await self._repo.files(job.id)
            spec = self._spec(req, files)
            now = utcnow()
            if spec.schedule != job.spec.schedule:
                job.last_tick = now if spec.schedule else None
            job.spec, job.files = spec, sorted(files)
            job.revision += 1
            job.updated_at = now
            await self._repo.save(job, req.files)
        return job

    @staticmethod
    def _spec(req: DeployJob, files: dict[str, bytes]) -> JobSpec:
        config = validate_config(req.config)
        runtime = req.runtime or detect_runtime(files, req.entrypoint)
        job_program(runtime, req.entrypoint, files)  # a 400 now, not at the first execution
        return JobSpec(
            runtime=runtime,
            entrypoint=req.entrypoint,
            config=config,
            envs=validate_envs(dict(req.envs)),
            schedule=req.schedule,
            schedule_tasks=validate_tasks(req.schedule_tasks or [{}]),
            enabled=req.enabled,
            labels=dict(req.labels),
            display_name=req.display_name,
        )

    async def get(self, workspace: str, name: str) -> Job:
        job = await self._repo.get(workspace, name)
        if job is None:
            raise NotFound(f"job {name!r} not found")
        return job

    async def list(self, workspace: str) -> list[Job]:
        return await self._repo.list(workspace)

    async def delete(self, workspace: str, name: str) -> Job:
        """Cancels the job's running executions (their sandboxes go), then forgets it all."""
        async with self._lock:
            job = await self.get(workspace, name)
            runs = [r for (job_id, _), r in self._runs.items() if job_id == job.id]
            for run in runs:
                run.cancel()
            await _wait(runs, CANCEL_WAIT_S)
            await self._repo.delete(job.id)
        return job

    # -- executions -----------------------------------------------------------------------

    async def execute(self, workspace: str, name: str, req: NewExecution) -> Execution:
        job = await self.get(workspace, name)
        if not job.spec.enabled:
            raise Conflict(f"job {name!r} is disabled: enable it to run executions")
        tasks = validate_tasks(req.tasks)
        memory = memory_override(req.memory, job.spec.config.memory_mb)
        env = validate_envs(dict(req.env))
        exec_id = validate_execution_id(req.execution_id) if req.execution_id else None
        program = job_program(job.spec.runtime, job.spec.entrypoint, await self._repo.files(job.id))
        cfg = job.spec.config
        now = utcnow()
        execution = Execution(
            id=exec_id or new_execution_id(),
            workspace=workspace,
            job_id=job.id,
            job_name=job.name,
            revision=job.revision,
            tasks=[Task(i, payload) for i, payload in enumerate(tasks)],
            memory_mb=memory or cfg.memory_mb,
            timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries,
            parallelism=min(len(tasks), self._concurrency, cfg.max_concurrent_tasks or len(tasks)),
            created_at=now,
            updated_at=now,
            env_override=env,
            memory_override=memory,
            trigger=req.trigger,
            scheduled_for=req.scheduled_for,
        )
        await self._repo.insert_execution(execution)
        run = ExecutionRun(
            execution, program, {**job.spec.envs, **env}, self._workloads, self._save
        )
        self._runs[(job.id, execution.id)] = run
        self._spawn(self._drive(job.id, run))
        return execution

    async def _drive(self, job_id: str, run: ExecutionRun) -> None:
        try:
            await run.run()
        finally:
            self._runs.pop((job_id, run.execution.id), None)
            with contextlib.suppress(Exception):
                await self._repo.prune(job_id, KEEP_EXECUTIONS)

    async def _save(self, execution: Execution) -> None:
        await self._repo.save_execution(execution)

    async def get_execution(self, workspace: str, name: str, execution_id: str) -> Execution:
        job = await self.get(workspace, name)
        run = self._runs.get((job.id, execution_id))
        if run is not None:
            return run.execution
        found = await self._repo.get_execution(job.id, execution_id)
        if found is None:
            raise NotFound(f"execution {execution_id!r} of job {name!r} not found")
        return found

    async def list_executions(
        self, workspace: str, name: str, limit: int, offset: int
    ) -> tuple[list[Execution], int]:
        """Newest first, and how many there are in all."""
        job = await self.get(workspace, name)
        found = await self._repo.list_executions(job.id, limit, offset)
        live = [self._runs.get((job.id, e.id)) for e in found]
        page = [r.execution if r is not None else e for e, r in zip(found, live, strict=True)]
        return page, await self._repo.count_executions(job.id)

    async def cancel(self, workspace: str, name: str, execution_id: str) -> Execution:
        """Idempotent: a finished execution is answered as it is."""
        execution = await self.get_execution(workspace, name, execution_id)
        run = self._runs.get((execution.job_id, execution_id))
        if run is not None:
            run.cancel()
            await self._save(run.execution)
            await _wait([run], CANCEL_WAIT_S)
        return execution

    # -- cron -----------------------------------------------------------------------------

    async def fire_due(self, now: datetime) -> None:
        """One pass of the cron loop: at most one execution per job (see domain.jobs.due_tick)."""
        async with self._lock:
            for job in await self._repo.scheduled():
                assert job.spec.schedule is not None
                tick = due_tick(job.spec.schedule, job.last_tick or job.created_at, now)
                if tick is None:
                    continue
                await self._repo.set_tick(job.id, tick)  # first: a crash cannot fire it twice
                if job.spec.enabled:
                    await self._fire(job, tick)

    async def _fire(self, job: Job, tick: datetime) -> None:
        try:
            ref = f"cron {job.name} {tick.isoformat()}"
            req = NewExecution(tasks=job.spec.schedule_tasks, trigger="cron", scheduled_for=tick)
            run = functools.partial(self.execute, job.workspace, job.name, req)
            await self._billing.paid(job.workspace, NOMINAL_MICROS, "job", ref, run)
        except CoveError as exc:  # e.g. 402: this tick is skipped, the next one tries again
            log.warning("cron tick of job %s/%s skipped: %s", job.workspace, job.name, exc)

    # -- lifecycle of the service ---------------------------------------------------------

    async def restore(self) -> None:
        """After a restart: executions cove was running end as failed; their sandboxes go."""
        workspaces = set()
        for e in await self._repo.unfinished():
            _end_interrupted(e, "cove stopped during this execution")
            await self._save(e)
            workspaces.add(e.workspace)
        for workspace in workspaces:
            for sandbox in self._sandboxes.list(workspace):
                if sandbox.source == "job":
                    with contextlib.suppress(CoveError):
                        await self._sandboxes.delete(workspace, sandbox.name, "job interrupted")

    async def shutdown(self) -> None:
        """SIGTERM: running tasks fail ("cove was stopped"), their sandboxes are deleted."""
        runs = list(self._runs.values())
        for run in runs:
            run.cancel(abort_reason="cove was stopped during this execution")
        await _wait(runs, CANCEL_WAIT_S)
        await asyncio.gather(*self._background, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _end_interrupted(e: Execution, reason: str) -> None:
    """Running and pending tasks alike fail: nobody cancelled them, and a task's `running`
    state may not have reached the database before the crash."""
    now = utcnow()
    for t in e.tasks:
        if t.status in (TaskStatus.RUNNING, TaskStatus.PENDING):
            t.status, t.error, t.completed_at = TaskStatus.FAILED, reason, now
    e.refresh()
    if e.status != ExecStatus.CANCELLED:
        e.error = reason
    e.completed_at = e.updated_at = now


async def _wait(runs: list[ExecutionRun], timeout: float) -> None:
    if runs:
        waits = [asyncio.ensure_future(r.done.wait()) for r in runs]
        _, pending = await asyncio.wait(waits, timeout=timeout)
        for w in pending:
            w.cancel()

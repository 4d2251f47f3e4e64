"""One execution in flight: each task in a sandbox of its own, `parallelism` at a time.

A task is attempted up to 1 + maxRetries times (a failure or a timeout is retried, each attempt
in a fresh sandbox); its status is its last attempt's. Cancelling an attempt cancels the
coroutine awaiting Workloads.run, whose `finally` deletes the sandbox (and with it the process).
Every change is saved, so a GET from another request or after a restart sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from cove.domain.durations import utcnow
from cove.domain.errors import CoveError
from cove.domain.jobs import LOG_TAIL, PAYLOAD_FILE, Execution, Task, TaskStatus, task_env
from cove.domain.programs import WORKDIR, Program
from cove.domain.runs import tail
from cove.services.workloads import Outcome, Placement, Workloads

log = logging.getLogger("cove.jobs")

_STATUS = {"completed": TaskStatus.SUCCEEDED, "timeout": TaskStatus.TIMEOUT}


class ExecutionRun:
    def __init__(
        self,
        execution: Execution,
        program: Program,
        envs: dict[str, str],
        workloads: Workloads,
        save: Callable[[Execution], Awaitable[None]],
    ) -> None:
        self.execution = execution
        self._program = program
        self._envs = envs  # the job's, then the execution's overrides
        self._workloads = workloads
        self._save = save
        self._tasks: list[asyncio.Task[None]] = []
        self._abort_reason: str | None = None  # set when cove stops: running tasks fail
        self.done = asyncio.Event()

    async def run(self) -> None:
        e = self.execution
        gate = asyncio.Semaphore(e.parallelism)
        self._tasks = [asyncio.ensure_future(self._task(t, gate)) for t in e.tasks]
        try:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            e.refresh()
            e.completed_at = e.completed_at or utcnow()
            await self._persist()
            self.done.set()

    def cancel(self, abort_reason: str | None = None) -> None:
        """Pending tasks are cancelled now; running ones once their sandbox is gone."""
        e = self.execution
        if abort_reason is None:
            e.cancel_requested = True
        self._abort_reason = e.error = abort_reason
        now = utcnow()
        for t in e.tasks:
            if t.status == TaskStatus.PENDING:
                t.status, t.completed_at = TaskStatus.CANCELLED, now
        for task in self._tasks:
            task.cancel()
        e.refresh()

    async def _task(self, t: Task, gate: asyncio.Semaphore) -> None:
        try:
            async with gate:
                if t.status != TaskStatus.PENDING:  # cancelled while it waited
                    return
                for attempt in range(1 + self.execution.max_retries):
                    await self._attempt(t, attempt)
                    if t.status == TaskStatus.SUCCEEDED or self.execution.cancel_requested:
                        break
        except asyncio.CancelledError:
            if not t.status.done:
                t.status = TaskStatus.FAILED if self._abort_reason else TaskStatus.CANCELLED
                t.error = self._abort_reason or "cancelled"
                t.completed_at = utcnow()
        await self._persist()

    async def _attempt(self, t: Task, attempt: int) -> None:
        e = self.execution
        now = utcnow()
        t.status, t.attempts = TaskStatus.RUNNING, attempt + 1
        t.started_at = t.started_at or now
        e.started_at = e.started_at or now
        await self._persist()
        envs = {**self._envs, **task_env(e, t, attempt, WORKDIR)}
        payload = json.dumps(t.payload).encode()
        program = replace(self._program, files={**self._program.files, PAYLOAD_FILE: payload})
        where = Placement(e.workspace, e.memory_mb, envs, source="job")
        try:
            outcome = await self._workloads.run(where, program, e.timeout_s)
        except CoveError as exc:  # e.g. the sandbox died under the task
            outcome = Outcome("error", error=exc.message)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            log.exception("task %s of %s", t.index, e.id)
            outcome = Outcome("error", error=f"internal error: {exc}")
        self._finish(t, outcome)

    @staticmethod
    def _finish(t: Task, outcome: Outcome) -> None:
        t.status = _STATUS.get(outcome.status, TaskStatus.FAILED)
        t.exit_code = outcome.exit_code
        t.stdout = _cut(outcome.stdout)
        t.stderr = _cut(outcome.stderr)
        t.error = outcome.error
        if t.status == TaskStatus.TIMEOUT and not t.error:
            t.error = "the task ran past the job's timeout and was killed"
        t.completed_at = utcnow()
        if t.started_at is not None:
            t.duration_ms = int((t.completed_at - t.started_at).total_seconds() * 1000)

    async def _persist(self) -> None:
        e = self.execution
        e.refresh()
        e.updated_at = utcnow()
        with contextlib.suppress(Exception):  # a lost save must not stop the tasks
            await asyncio.shield(self._save(e))


def _cut(text: str) -> str:
    return tail(text, LOG_TAIL)

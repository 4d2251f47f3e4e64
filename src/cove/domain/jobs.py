"""Jobs (seed 000 "Jobs", Blaxel Jobs/*): code + runtime config + an optional cron schedule.

An execution runs its tasks, each in a sandbox of its own with its own payload. Pure data and
rules here: limits, statuses and how an execution's status follows from its tasks', cron
ticks and the missed-run rule, and how a project's runtime and command are found.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from croniter import croniter

from cove.domain.errors import InvalidRequest

MIN_MEMORY_MB, MAX_MEMORY_MB, DEFAULT_MEMORY_MB = 128, 4096, 256
MIN_TIMEOUT_S, MAX_TIMEOUT_S, DEFAULT_TIMEOUT_S = 1, 3600, 300
MAX_RETRIES = 10
MAX_TASKS = 1000
# A payload travels in an env var (Linux caps one at 128 KiB) and in a file.
MAX_PAYLOAD_BYTES = 64 * 1024
LOG_TAIL = 64 * 1024  # per stream and task: the newest bytes of stdout/stderr are kept
PAYLOAD_FILE = ".cove/task.json"  # under the workdir; BL_TASK_PAYLOAD_FILE has the full path
_EXEC_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"

    @property
    def done(self) -> bool:
        return self not in (TaskStatus.PENDING, TaskStatus.RUNNING)


class ExecStatus(StrEnum):
    """The SDK's JobExecutionStatus values that cove uses."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in (ExecStatus.SUCCEEDED, ExecStatus.FAILED, ExecStatus.CANCELLED)


@dataclass
class RuntimeConfig:
    memory_mb: int = DEFAULT_MEMORY_MB
    timeout_s: int = DEFAULT_TIMEOUT_S
    max_retries: int = 0  # a failed (or timed out) task is run again up to this many times
    max_concurrent_tasks: int | None = None  # None: the server's COVE_JOB_CONCURRENCY


@dataclass
class JobSpec:
    runtime: str
    entrypoint: str | None = None  # a file among the files, or a shell command
    config: RuntimeConfig = field(default_factory=RuntimeConfig)
    envs: dict[str, str] = field(default_factory=dict)
    schedule: str | None = None
    schedule_tasks: list[Any] = field(default_factory=lambda: [{}])  # what a cron tick runs
    enabled: bool = True
    labels: dict[str, str] = field(default_factory=dict)
    display_name: str | None = None


@dataclass
class Job:
    id: str
    workspace: str
    name: str
    spec: JobSpec
    files: list[str]  # paths only; the contents live in the store (loaded to run)
    revision: int
    created_at: datetime
    updated_at: datetime
    last_tick: datetime | None = None  # the newest cron tick fired (or passed over)


@dataclass
class Task:
    index: int
    payload: Any
    status: TaskStatus = TaskStatus.PENDING
    attempts: int = 0
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_ms: int | None = None

    @property
    def retries(self) -> int:
        return max(0, self.attempts - 1)


@dataclass
class Execution:
    id: str
    workspace: str
    job_id: str
    job_name: str
    revision: int
    tasks: list[Task]
    memory_mb: int
    timeout_s: int
    max_retries: int
    parallelism: int
    created_at: datetime
    env_override: dict[str, str] = field(default_factory=dict)
    memory_override: int | None = None
    trigger: str = "api"  # api | cron
    scheduled_for: datetime | None = None  # the cron tick a cron execution stands for
    status: ExecStatus = ExecStatus.PENDING
    cancel_requested: bool = False
    started_at: datetime | None = None
    completed_at: datetime | None = None
    updated_at: datetime | None = None
    error: str | None = None

    def refresh(self) -> None:
        self.status = aggregate(self.tasks, self.cancel_requested)


def aggregate(tasks: list[Task], cancel_requested: bool) -> ExecStatus:
    """An execution's status from its tasks'. A timed-out task fails its execution."""
    if cancel_requested:
        live = any(t.status == TaskStatus.RUNNING for t in tasks)
        return ExecStatus.CANCELLING if live else ExecStatus.CANCELLED
    if all(t.status == TaskStatus.PENDING for t in tasks):
        return ExecStatus.PENDING
    if not all(t.status.done for t in tasks):
        return ExecStatus.RUNNING
    if all(t.status == TaskStatus.SUCCEEDED for t in tasks):
        return ExecStatus.SUCCEEDED
    return ExecStatus.FAILED


def new_job_id() -> str:
    return "job_" + secrets.token_hex(8)


def new_execution_id() -> str:
    return "exec-" + secrets.token_hex(6)


def validate_execution_id(value: str) -> str:
    if not _EXEC_ID.match(value):
        raise InvalidRequest("executionId: use 1-63 lowercase letters, digits or hyphens")
    return value


# -- limits -----------------------------------------------------------------------------------


def validate_config(cfg: RuntimeConfig) -> RuntimeConfig:
    _int_in(cfg.memory_mb, MIN_MEMORY_MB, MAX_MEMORY_MB, "runtimeConfig.memory (MB)")
    _int_in(cfg.timeout_s, MIN_TIMEOUT_S, MAX_TIMEOUT_S, "runtimeConfig.timeout (seconds)")
    _int_in(cfg.max_retries, 0, MAX_RETRIES, "maxRetries")
    if cfg.max_concurrent_tasks is not None:
        _int_in(cfg.max_concurrent_tasks, 1, MAX_TASKS, "maxConcurrentTasks")
    return cfg


def memory_override(value: Any, job_memory_mb: int) -> int | None:
    """Downwards only: above the job's memory is a 400, like Blaxel."""
    if value is None:
        return None
    _int_in(value, MIN_MEMORY_MB, MAX_MEMORY_MB, "memory (MB)")
    if value > job_memory_mb:
        raise InvalidRequest(
            f"memory {value} MB is above the job's {job_memory_mb} MB: overrides only lower it"
        )
    return int(value)


def validate_tasks(tasks: Any) -> list[Any]:
    if not isinstance(tasks, list) or not tasks:
        raise InvalidRequest("tasks must be a non-empty array of task payloads")
    if len(tasks) > MAX_TASKS:
        raise InvalidRequest(f"at most {MAX_TASKS} tasks per execution")
    for i, payload in enumerate(tasks):
        if len(json.dumps(payload)) > MAX_PAYLOAD_BYTES:
            raise InvalidRequest(f"tasks[{i}] is larger than {MAX_PAYLOAD_BYTES} bytes of JSON")
    return tasks


def _int_in(value: Any, lo: int, hi: int, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidRequest(f"{what} must be an integer from {lo} to {hi}")


# -- cron -------------------------------------------------------------------------------------


def parse_schedule(expr: Any) -> str | None:
    """5 fields (minute hour day month weekday), or 6 with SECONDS FIRST; @hourly-style macros."""
    if expr is None or expr == "":
        return None
    if not isinstance(expr, str):
        raise InvalidRequest("schedule must be a cron expression string")
    text = " ".join(expr.split())
    fields = len(text.split(" "))
    ok = fields in (5, 6) or (text.startswith("@") and fields == 1)
    if not ok or not croniter.is_valid(text, second_at_beginning=fields == 6):
        raise InvalidRequest(
            f"schedule {expr!r} is not a cron expression: 5 fields 'min hour day month weekday' "
            "(or 6 with seconds first)"
        )
    return text


def next_tick(expr: str, after: datetime) -> datetime:
    six = len(expr.split(" ")) == 6
    return croniter(expr, after, second_at_beginning=six).get_next(datetime)


def due_tick(expr: str, last: datetime, now: datetime) -> datetime | None:
    """The missed-run rule: the NEWEST tick in (last, now], or None when none is due.

    However many ticks passed (cove was down, the loop was late), one execution fires for the
    newest of them and the schedule continues from there.
    """
    if next_tick(expr, last) > now:
        return None
    six = len(expr.split(" ")) == 6
    prev = croniter(expr, now, second_at_beginning=six).get_prev(datetime)
    after_prev = next_tick(expr, prev)
    return after_prev if after_prev <= now else prev


def task_env(execution: Execution, task: Task, attempt: int, workdir: str) -> dict[str, str]:
    """How a task gets its payload (see README "Jobs"): env vars and a JSON file."""
    return {
        "TASK_INDEX": str(task.index),  # the key the Blaxel SDK's bl_start_job reads
        "TASK_COUNT": str(len(execution.tasks)),
        "TASK_ATTEMPT": str(attempt),
        "BL_TASK_PAYLOAD": json.dumps(task.payload),
        "BL_TASK_PAYLOAD_FILE": f"{workdir}/{PAYLOAD_FILE}",
        "BL_EXECUTION_ID": execution.id,
        "BL_JOB_NAME": execution.job_name,
        "BL_NAME": execution.job_name,
        "BL_TYPE": "job",
        "BL_WORKSPACE": execution.workspace,
    }


def stats(e: Execution) -> dict[str, int]:
    """The SDK's JobExecutionStats: a timed-out task counts as a failure."""
    count = {s: sum(1 for t in e.tasks if t.status == s) for s in TaskStatus}
    return {
        "total": len(e.tasks),
        "success": count[TaskStatus.SUCCEEDED],
        "failure": count[TaskStatus.FAILED] + count[TaskStatus.TIMEOUT],
        "running": count[TaskStatus.RUNNING],
        "pending": count[TaskStatus.PENDING],
        "cancelled": count[TaskStatus.CANCELLED],
        "retried": sum(1 for t in e.tasks if t.retries),
    }

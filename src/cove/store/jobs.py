"""Job and job-execution records (db.jobs, db.job_executions).

A job row holds its current revision only: files as base64 in their own column (loaded when an
execution starts, not with every read). Executions keep their tasks, attempts and log tails in
one JSON document, saved whole on every state change.
"""

from __future__ import annotations

import base64
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from cove.domain.errors import Conflict
from cove.domain.jobs import (
    ExecStatus,
    Execution,
    Job,
    JobSpec,
    RuntimeConfig,
    Task,
    TaskStatus,
)
from cove.store.db import job_executions as runs
from cove.store.db import jobs as table
from cove.store.writer import Writer

_JOB_COLUMNS = [c for c in table.c if c.name != "files"]
_INSERT = table.insert()
_UPDATE = table.update().where(table.c.id == sa.bindparam("key"))
_DELETE = table.delete().where(table.c.id == sa.bindparam("key"))
_DELETE_RUNS_OF = runs.delete().where(runs.c.job_id == sa.bindparam("key"))
_INSERT_RUN = runs.insert()
_UPDATE_RUN = runs.update().where(
    runs.c.job_id == sa.bindparam("key_job"), runs.c.id == sa.bindparam("key")
)
_UNFINISHED = [s.value for s in ExecStatus if not s.done]


class JobRepo:
    def __init__(self, engine: AsyncEngine, writer: Writer) -> None:
        self._engine = engine
        self._writer = writer

    # -- jobs ---------------------------------------------------------------------------------

    async def insert(self, job: Job, files: dict[str, bytes]) -> None:
        try:
            await self._writer.write(_INSERT, {**_row(job), "files": _encode(files)})
        except IntegrityError:
            raise Conflict(f"job {job.name!r} already exists") from None

    async def save(self, job: Job, files: dict[str, bytes] | None = None) -> None:
        row = _row(job)
        row["key"] = row.pop("id")
        if files is not None:
            row["files"] = _encode(files)
        await self._writer.write(_UPDATE, row)

    async def set_tick(self, job_id: str, tick: datetime) -> None:
        await self._writer.write(_UPDATE, {"key": job_id, "last_tick": tick})

    async def delete(self, job_id: str) -> None:
        await self._writer.write_all(  # one commit: no job row without its executions
            [(_DELETE_RUNS_OF, {"key": job_id}), (_DELETE, {"key": job_id})]
        )

    async def get(self, workspace: str, name: str) -> Job | None:
        query = sa.select(*_JOB_COLUMNS).where(table.c.workspace == workspace)
        rows = await self._jobs(query.where(table.c.name == name))
        return rows[0] if rows else None

    async def list(self, workspace: str) -> list[Job]:
        query = sa.select(*_JOB_COLUMNS).where(table.c.workspace == workspace)
        return await self._jobs(query.order_by(table.c.created_at))

    async def scheduled(self) -> list[Job]:
        """Every job with a cron schedule, across workspaces."""
        return await self._jobs(sa.select(*_JOB_COLUMNS).where(table.c.schedule.is_not(None)))

    async def files(self, job_id: str) -> dict[str, bytes]:
        async with self._engine.connect() as conn:
            raw = (
                await conn.execute(sa.select(table.c.files).where(table.c.id == job_id))
            ).scalar()
        return {p: base64.b64decode(v) for p, v in (raw or {}).items()}

    async def _jobs(self, query: Any) -> list[Job]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_job(r) for r in rows]

    # -- executions ---------------------------------------------------------------------------

    async def insert_execution(self, e: Execution) -> None:
        try:
            await self._writer.write(_INSERT_RUN, _run_row(e))
        except IntegrityError:
            raise Conflict(f"execution {e.id!r} already exists") from None

    async def save_execution(self, e: Execution) -> None:
        row = _run_row(e)
        row["key"], row["key_job"] = row.pop("id"), row.pop("job_id")
        await self._writer.write(_UPDATE_RUN, row)

    async def get_execution(self, job_id: str, execution_id: str) -> Execution | None:
        query = runs.select().where(runs.c.job_id == job_id, runs.c.id == execution_id)
        found = await self._runs(query)
        return found[0] if found else None

    async def list_executions(self, job_id: str, limit: int, offset: int) -> list[Execution]:
        query = (
            runs.select()
            .where(runs.c.job_id == job_id)
            .order_by(runs.c.created_at.desc(), runs.c.id)
            .limit(limit)
            .offset(offset)
        )
        return await self._runs(query)

    async def count_executions(self, job_id: str) -> int:
        query = sa.select(sa.func.count()).select_from(runs).where(runs.c.job_id == job_id)
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar() or 0)

    async def unfinished(self) -> list[Execution]:
        """Executions a stopped server left pending or running (for restore)."""
        return await self._runs(runs.select().where(runs.c.status.in_(_UNFINISHED)))

    async def prune(self, job_id: str, keep: int) -> None:
        """Drop the oldest finished executions of a job beyond the newest `keep`."""
        newest = (
            sa.select(runs.c.id)
            .where(runs.c.job_id == job_id)
            .order_by(runs.c.created_at.desc())
            .limit(keep)
        )
        stmt = runs.delete().where(
            runs.c.job_id == job_id,
            runs.c.status.not_in(_UNFINISHED),
            runs.c.id.not_in(newest.scalar_subquery()),
        )
        await self._writer.write(stmt, {})

    async def _runs(self, query: Any) -> list[Execution]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_execution(r["doc"]) for r in rows]


# -- rows <-> domain -------------------------------------------------------------------------


def _encode(files: dict[str, bytes]) -> dict[str, str]:
    return {p: base64.b64encode(v).decode() for p, v in files.items()}


def _row(job: Job) -> dict[str, Any]:
    spec = asdict(job.spec)
    doc = {"spec": spec, "files": job.files, "updated_at": _t(job.updated_at)}
    return {
        "id": job.id,
        "workspace": job.workspace,
        "name": job.name,
        "revision": job.revision,
        "schedule": job.spec.schedule,
        "last_tick": job.last_tick,
        "created_at": job.created_at,
        "doc": doc,
    }


def _job(row: Any) -> Job:
    doc = row["doc"]
    spec = dict(doc["spec"])
    spec["config"] = RuntimeConfig(**spec["config"])
    return Job(
        id=row["id"],
        workspace=row["workspace"],
        name=row["name"],
        spec=JobSpec(**spec),
        files=list(doc["files"]),
        revision=row["revision"],
        created_at=_aware(row["created_at"]),
        updated_at=datetime.fromisoformat(doc["updated_at"]),
        last_tick=_aware(row["last_tick"]) if row["last_tick"] else None,
    )


_TIMES = ("created_at", "started_at", "completed_at", "updated_at", "scheduled_for")


def _run_row(e: Execution) -> dict[str, Any]:
    doc = asdict(e)
    for key in _TIMES:
        doc[key] = _t(doc[key])
    for task in doc["tasks"]:
        task["started_at"], task["completed_at"] = _t(task["started_at"]), _t(task["completed_at"])
    return {
        "id": e.id,
        "job_id": e.job_id,
        "workspace": e.workspace,
        "status": e.status.value,
        "created_at": e.created_at,
        "doc": doc,
    }


def _execution(doc: dict[str, Any]) -> Execution:
    doc = dict(doc)
    for key in _TIMES:
        doc[key] = _parse(doc[key])
    doc["status"] = ExecStatus(doc["status"])
    doc["tasks"] = [_task(t) for t in doc["tasks"]]
    return Execution(**doc)


def _task(doc: dict[str, Any]) -> Task:
    doc = dict(doc)
    doc["status"] = TaskStatus(doc["status"])
    doc["started_at"], doc["completed_at"] = _parse(doc["started_at"]), _parse(doc["completed_at"])
    return Task(**doc)


def _t(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)

"""Finished ephemeral runs, per workspace (a row is written once, when the run has ended).

stdout and stderr arrive already capped (domain/programs.py RUN_OUTPUT_LIMIT, 1 MiB each).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from cove.domain.runs import Run
from cove.store.db import runs as table
from cove.store.writer import Writer

_INSERT = table.insert()


class RunRepo:
    def __init__(self, engine: AsyncEngine, writer: Writer) -> None:
        self._engine = engine
        self._writer = writer

    async def insert(self, run: Run) -> None:
        await self._writer.write(_INSERT, _row(run))

    async def get(self, workspace: str, run_id: str) -> Run | None:
        query = table.select().where(table.c.id == run_id, table.c.workspace == workspace)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _run(row) if row is not None else None

    async def recent(self, workspace: str, limit: int) -> list[Run]:
        """Newest first."""
        query = (
            table.select()
            .where(table.c.workspace == workspace)
            .order_by(table.c.created_at.desc(), table.c.id.desc())
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_run(r) for r in rows]


def _row(run: Run) -> dict[str, Any]:
    doc = {
        "language": run.language,
        "timeout": run.timeout_s,
        "status": run.status,
        "stdout": run.stdout,
        "stderr": run.stderr,
        "exitCode": run.exit_code,
        "durationMs": run.duration_ms,
        "completedAt": run.completed_at.isoformat() if run.completed_at else None,
        "error": run.error,
    }
    return {"id": run.id, "workspace": run.workspace, "created_at": run.created_at, "doc": doc}


def _run(row: Any) -> Run:
    doc = row["doc"]
    created = row["created_at"]
    return Run(
        id=row["id"],
        workspace=row["workspace"],
        language=doc["language"],
        timeout_s=doc["timeout"],
        created_at=created if created.tzinfo else created.replace(tzinfo=UTC),
        status=doc["status"],
        stdout=doc["stdout"],
        stderr=doc["stderr"],
        exit_code=doc["exitCode"],
        duration_ms=doc["durationMs"],
        completed_at=datetime.fromisoformat(doc["completedAt"]) if doc["completedAt"] else None,
        error=doc.get("error"),
    )

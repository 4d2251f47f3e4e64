"""One writer with group commit.

SQLite allows one writer at a time; concurrent transactions on several pooled connections wait
on its lock with sleeping back-off, which turned a burst of 100 creates into seconds. Writes go
through one task instead: whatever is queued when it runs shares one transaction. If a batch
fails (say, a unique name taken by another replica), its statements are retried one by one so
only the guilty one fails.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable

# A statement built once (its compiled form is cached) and the parameters of one write (a list
# of parameter sets runs it as executemany).
Write = tuple[Executable, dict[str, Any] | list[dict[str, Any]]]


class Writer:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._queue: list[tuple[list[Write], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def write(self, statement: Executable, params: dict[str, Any]) -> None:
        await self.write_all([(statement, params)])

    async def write_all(self, writes: list[Write]) -> None:
        """Several statements that commit together or not at all (in one batch)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((writes, done))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())
        await done

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await self._commit([w for writes, _ in batch for w in writes])
            except Exception:
                await self._one_by_one(batch)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def _commit(self, writes: list[Write]) -> None:
        async with self._engine.begin() as conn:
            for statement, params in writes:
                await conn.execute(statement, params)

    async def _one_by_one(self, batch: list[tuple[list[Write], asyncio.Future[None]]]) -> None:
        for writes, done in batch:
            try:
                await self._commit(writes)
            except Exception as exc:
                if not done.done():
                    done.set_exception(exc)
            else:
                if not done.done():
                    done.set_result(None)

"""Sandbox records."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from cove.domain.errors import Conflict
from cove.domain.sandbox import ExpirationPolicy, Port, Sandbox, SandboxSpec, Status
from cove.store.db import sandboxes as table
from cove.store.writer import Writer

# Built once: per-call .values(**row) cost ~1 ms of statement construction on every write.
_INSERT = table.insert()
_UPDATE = table.update().where(table.c.id == sa.bindparam("key"))


class SandboxRepo:
    def __init__(self, engine: AsyncEngine, writer: Writer) -> None:
        self._engine = engine
        self._writer = writer

    async def insert(self, sandbox: Sandbox) -> None:
        try:
            await self._writer.write(_INSERT, _row(sandbox))
        except IntegrityError:
            raise Conflict(f"sandbox {sandbox.name!r} already exists") from None

    async def save(self, sandbox: Sandbox) -> None:
        row = _row(sandbox)
        row["key"] = row.pop("id")
        await self._writer.write(_UPDATE, row)

    async def live(self) -> list[Sandbox]:
        """Every sandbox not yet deleted, across workspaces (for restart and expiry)."""
        query = table.select().where(table.c.deleted_at.is_(None))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_sandbox(r) for r in rows]

    async def latest_deleted(self, workspace: str, name: str) -> Sandbox | None:
        query = (
            table.select()
            .where(table.c.workspace == workspace, table.c.name == name)
            .where(table.c.deleted_at.is_not(None))
            .order_by(table.c.deleted_at.desc())
            .limit(1)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _sandbox(row) if row else None

    async def deleted(self, workspace: str, limit: int = 100) -> list[Sandbox]:
        query = (
            table.select()
            .where(table.c.workspace == workspace, table.c.deleted_at.is_not(None))
            .order_by(table.c.deleted_at.desc())
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_sandbox(r) for r in rows]


def _row(s: Sandbox) -> dict[str, Any]:
    doc = {
        "spec": asdict(s.spec),
        "source": s.source,
        "reason": s.reason,
        "events": s.events,
        "updated_at": _t(s.updated_at),
        "last_used_at": _t(s.last_used_at),
        "expires_at": _t(s.expires_at),
    }
    return {
        "id": s.id,
        "workspace": s.workspace,
        "name": s.name,
        "status": s.status.value,
        "external_id": s.external_id,
        "runtime_id": s.runtime_id,
        "created_at": s.created_at,
        "deleted_at": s.deleted_at,
        "doc": doc,
    }


def _sandbox(row: Any) -> Sandbox:
    doc = row["doc"]
    spec = dict(doc["spec"])
    spec["ports"] = [Port(**p) for p in spec.get("ports", [])]
    spec["policies"] = [ExpirationPolicy(**p) for p in spec.get("policies", [])]
    return Sandbox(
        id=row["id"],
        workspace=row["workspace"],
        name=row["name"],
        spec=SandboxSpec(**spec),
        status=Status(row["status"]),
        external_id=row["external_id"],
        source=doc.get("source", "sandbox"),
        runtime_id=row["runtime_id"],
        reason=doc.get("reason"),
        created_at=_aware(row["created_at"]),
        updated_at=_p(doc.get("updated_at")) or _aware(row["created_at"]),
        last_used_at=_p(doc.get("last_used_at")) or _aware(row["created_at"]),
        expires_at=_p(doc.get("expires_at")),
        deleted_at=_aware(row["deleted_at"]) if row["deleted_at"] else None,
        events=doc.get("events", []),
    )


def _t(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _p(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything in cove is UTC."""

    return value if value.tzinfo else value.replace(tzinfo=UTC)

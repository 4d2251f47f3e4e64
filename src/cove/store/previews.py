"""Preview and preview-token records (tokens are stored as-is; see db.preview_tokens)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from cove.domain.errors import Conflict
from cove.domain.preview import Preview, PreviewSpec, PreviewToken
from cove.store.db import preview_tokens as tokens
from cove.store.db import previews as table
from cove.store.writer import Writer

_INSERT = table.insert()
_UPDATE = table.update().where(table.c.id == sa.bindparam("key"))
_DELETE = table.delete().where(table.c.id == sa.bindparam("key"))
_DELETE_TOKENS_OF = tokens.delete().where(tokens.c.preview_id == sa.bindparam("key"))
_INSERT_TOKEN = tokens.insert()
_DELETE_TOKEN = tokens.delete().where(tokens.c.value == sa.bindparam("key"))


class PreviewRepo:
    def __init__(self, engine: AsyncEngine, writer: Writer) -> None:
        self._engine = engine
        self._writer = writer

    async def insert(self, p: Preview) -> None:
        try:
            await self._writer.write(_INSERT, _row(p))
        except IntegrityError:
            raise Conflict(f"preview {p.name!r} already exists") from None

    async def save(self, p: Preview) -> None:
        row = _row(p)
        row["key"] = row.pop("id")
        await self._writer.write(_UPDATE, row)

    async def delete(self, preview_id: str) -> None:
        await self._writer.write_all(  # one commit: no preview row without its tokens
            [(_DELETE_TOKENS_OF, {"key": preview_id}), (_DELETE, {"key": preview_id})]
        )

    async def insert_token(self, t: PreviewToken) -> None:
        row = {
            "value": t.value,
            "preview_id": t.preview_id,
            "name": t.name,
            "expires_at": t.expires_at,
            "created_at": t.created_at,
        }
        await self._writer.write(_INSERT_TOKEN, row)

    async def delete_token(self, value: str) -> None:
        await self._writer.write(_DELETE_TOKEN, {"key": value})

    async def all(self) -> tuple[list[Preview], list[PreviewToken]]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(table.select())).mappings().all()
            token_rows = (await conn.execute(tokens.select())).mappings().all()
        found = [_preview(r) for r in rows]
        return found, [
            PreviewToken(
                r["name"],
                r["preview_id"],
                r["value"],
                _aware(r["expires_at"]),
                _aware(r["created_at"]),
            )
            for r in token_rows
        ]


def _row(p: Preview) -> dict[str, Any]:
    doc = {
        "sandbox_name": p.sandbox_name,
        "spec": asdict(p.spec),
        "updated_at": p.updated_at.isoformat(),
        "expires_at": p.expires_at.isoformat() if p.expires_at else None,
    }
    return {
        "id": p.id,
        "workspace": p.workspace,
        "sandbox_id": p.sandbox_id,
        "name": p.name,
        "created_at": p.created_at,
        "doc": doc,
    }


def _preview(row: Any) -> Preview:
    doc = row["doc"]
    return Preview(
        id=row["id"],
        workspace=row["workspace"],
        sandbox_id=row["sandbox_id"],
        sandbox_name=doc["sandbox_name"],
        name=row["name"],
        spec=PreviewSpec(**doc["spec"]),
        created_at=_aware(row["created_at"]),
        updated_at=datetime.fromisoformat(doc["updated_at"]),
        expires_at=datetime.fromisoformat(doc["expires_at"]) if doc.get("expires_at") else None,
    )


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)

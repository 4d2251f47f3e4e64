"""API keys and workspaces."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cove.domain.durations import utcnow
from cove.store.db import api_keys, workspaces


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRepo:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def seed(self, key: str, workspace: str, balance_micros: int | None) -> None:
        """Idempotent: re-seeding keeps an existing workspace's balance."""
        now = utcnow()
        async with self._engine.begin() as conn:
            if not (await conn.execute(_ws(workspace))).first():
                await conn.execute(
                    workspaces.insert().values(
                        name=workspace, balance_micros=balance_micros or 0, created_at=now
                    )
                )
            digest = hash_key(key)
            await conn.execute(api_keys.delete().where(api_keys.c.key_hash == digest))
            await conn.execute(
                api_keys.insert().values(key_hash=digest, workspace=workspace, created_at=now)
            )

    async def all(self) -> dict[str, str]:
        """key hash → workspace, loaded once and cached by the auth service."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(sa.select(api_keys.c.key_hash, api_keys.c.workspace))).all()
        return {h: w for h, w in rows}


def _ws(name: str) -> sa.Select:
    return sa.select(workspaces.c.name).where(workspaces.c.name == name)

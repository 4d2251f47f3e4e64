"""Workspace balances and the ledger of every charge and credit (integer micro-dollars).

Charges do not go through store/writer.py: a conditional charge needs its answer (did the
balance cover it?) and must move the balance and write its ledger row in one transaction.
The transaction opens with the UPDATE, so on SQLite it takes the write lock at once (no
read-then-upgrade that could fail with BUSY_SNAPSHOT) and waits for the group-commit writer
through busy_timeout like any other writer; on PostgreSQL the UPDATE locks the row.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cove.domain.durations import utcnow
from cove.store.db import ledger, workspaces
from cove.store.writer import Writer

log = logging.getLogger("cove.ledger")

# Metering without enforcement cannot refuse anything, so its entries are buffered and
# written every FLUSH_S through the group-commit writer as two executemany statements (the
# entries, one balance change per workspace). One statement per entry cost a burst of 100
# creates ~100 ms of event-loop time; awaiting each commit cost a lone create ~1 ms.
FLUSH_S = 0.05
_ADD = (
    workspaces.update()
    .where(workspaces.c.name == sa.bindparam("ws"))
    .values(balance_micros=workspaces.c.balance_micros + sa.bindparam("amount"))
)
_LOG = ledger.insert().values(
    workspace=sa.bindparam("ws"),
    amount_micros=sa.bindparam("amount"),
    kind=sa.bindparam("kind"),
    ref=sa.bindparam("ref"),
    created_at=sa.bindparam("at"),
)


@dataclass
class Outcome:
    done: bool  # the entry was written
    balance_micros: int  # the balance after (or, when refused, as it is)


@dataclass
class KindTotal:
    count: int = 0
    micros: int = 0  # signed sum: charges negative, credits positive


@dataclass
class Account:
    workspace: str
    balance_micros: int
    kinds: dict[str, KindTotal] = field(default_factory=dict)


class LedgerRepo:
    def __init__(self, engine: AsyncEngine, writer: Writer | None = None) -> None:
        self._engine = engine
        self._writer = writer
        self._pending: list[dict[str, object]] = []
        self._flushing: asyncio.Task[None] | None = None

    def post_later(self, workspace: str, amount: int, kind: str, ref: str) -> None:
        """Buffer an unconditional entry; written within FLUSH_S (see `flush`)."""
        entry = {"ws": workspace, "amount": amount, "kind": kind, "ref": ref[:256], "at": utcnow()}
        self._pending.append(entry)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.ensure_future(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(FLUSH_S)
        try:
            await self.flush()
        except Exception:  # the entries stay pending for the next flush
            log.exception("ledger flush failed")

    async def flush(self) -> None:
        """Write every buffered entry now (also on shutdown and before usage reports)."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        sums: dict[str, int] = {}
        for entry in pending:
            sums[str(entry["ws"])] = sums.get(str(entry["ws"]), 0) + int(entry["amount"])  # type: ignore[call-overload]
        changes = [{"ws": ws, "amount": amount} for ws, amount in sums.items()]
        try:
            if self._writer is not None:
                await self._writer.write_all([(_LOG, pending), (_ADD, changes)])
            else:
                async with self._engine.begin() as conn:
                    await conn.execute(_LOG, pending)
                    await conn.execute(_ADD, changes)
        except BaseException:
            self._pending[:0] = pending
            raise

    async def post(
        self, workspace: str, amount: int, kind: str, ref: str, *, floor: int | None
    ) -> Outcome:
        """Add `amount` (negative = charge) to the balance and log it, atomically.

        With `floor`, refuse (write nothing) when the balance would drop below it.
        """
        change = workspaces.update().where(workspaces.c.name == workspace)
        if floor is not None:
            change = change.where(workspaces.c.balance_micros + amount >= floor)
        change = change.values(balance_micros=workspaces.c.balance_micros + amount)
        entry = ledger.insert().values(
            workspace=workspace, amount_micros=amount, kind=kind, ref=ref[:256], created_at=utcnow()
        )
        async with self._engine.begin() as conn:
            after = (await conn.execute(change.returning(workspaces.c.balance_micros))).scalar()
            if after is None and floor is not None:
                return Outcome(False, await _balance(conn, workspace))
            await conn.execute(entry)
            return Outcome(True, int(after or 0))

    async def ensure_workspace(self, workspace: str) -> None:
        """Create an empty account (an admin top-up may precede the first API key)."""
        touch = workspaces.update().where(workspaces.c.name == workspace)
        async with self._engine.begin() as conn:  # a write first: see the module docstring
            if (await conn.execute(touch.values(name=workspace))).rowcount == 1:
                return
            await conn.execute(
                workspaces.insert().values(name=workspace, balance_micros=0, created_at=utcnow())
            )

    async def balance(self, workspace: str) -> int:
        async with self._engine.connect() as conn:
            return await _balance(conn, workspace)

    async def accounts(self, workspace: str | None = None) -> list[Account]:
        """Balance and per-kind totals of one workspace, or of every workspace."""
        balances = sa.select(workspaces.c.name, workspaces.c.balance_micros)
        totals = sa.select(
            ledger.c.workspace,
            ledger.c.kind,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(ledger.c.amount_micros), 0),
        ).group_by(ledger.c.workspace, ledger.c.kind)
        if workspace is not None:
            balances = balances.where(workspaces.c.name == workspace)
            totals = totals.where(ledger.c.workspace == workspace)
        async with self._engine.connect() as conn:
            found = {n: Account(n, b) for n, b in (await conn.execute(balances)).all()}
            for name, kind, count, micros in (await conn.execute(totals)).all():
                account = found.setdefault(name, Account(name, 0))
                account.kinds[kind] = KindTotal(int(count), int(micros))
        return [found[n] for n in sorted(found)]


async def _balance(conn: AsyncConnection, workspace: str) -> int:
    query = sa.select(workspaces.c.balance_micros).where(workspaces.c.name == workspace)
    return int((await conn.execute(query)).scalar() or 0)

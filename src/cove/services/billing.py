"""Metering and payment: every priced operation is charged to its workspace's prepaid balance.

Callers charge BEFORE they create anything, so a refusal (402) has no side effect. Usage is
always recorded; the balance is only a gate when enforcing (COVE_BILLING=enforce). Without
enforcement the balance still moves (it may go below zero), so it always equals its starting
value plus the ledger, and turning enforcement on later keeps the history honest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cove.domain.durations import parse_duration, parse_timestamp, utcnow
from cove.domain.errors import InvalidRequest, PaymentRequired
from cove.domain.pricing import CURRENCY, format_usd, memory_price, sandbox_price
from cove.domain.sandbox import Sandbox, SandboxSpec
from cove.store.ledger import LedgerRepo

T = TypeVar("T")

TOP_UP = "top_up"
REFUND = "refund"  # unused time given back (COVE_BILLING_REFUND_UNUSED=on)
VOID = "void"  # a charge given back because its operation did not happen
OVERTIME = "overtime"  # time past what was paid upfront, recorded at deletion
# A sandbox without an expiry (v0 without ttl) is paid for this long upfront, like v1's
# default ttl; whatever it lives beyond is recorded as overtime when it is deleted.
UNBOUNDED_HOLD_S = 4 * 3600


def action(workspace: str) -> str:
    return f"top up the workspace balance: cove admin top-up {workspace} <amount>"


@dataclass(frozen=True)
class Policy:
    enforce: bool = False
    refund_unused: bool = False


class Billing:
    def __init__(self, ledger: LedgerRepo, policy: Policy) -> None:
        self._ledger = ledger
        self._policy = policy
        # Charges of this process queue here instead of in SQLite's sleeping busy back-off;
        # the conditional UPDATE still guards against other processes (admin CLI, replicas).
        self._lock = asyncio.Lock()

    @property
    def enforcing(self) -> bool:
        return self._policy.enforce

    async def charge(self, workspace: str, micros: int, what: str, ref: str = "") -> None:
        """Debit `micros` for `what` (a kind: "sandbox", "extend", "run", "nominal", …).

        Raises PaymentRequired, changing nothing, when enforcing and the balance is short.
        """
        if micros < 0:
            raise ValueError("a charge is not negative")
        if not self._policy.enforce:
            self._ledger.post_later(workspace, -micros, what, ref)  # nothing to refuse
            return
        async with self._lock:
            outcome = await self._ledger.post(workspace, -micros, what, ref, floor=0)
        if not outcome.done:
            raise PaymentRequired(
                f"insufficient balance: {what} {ref} costs ${format_usd(micros)}, "
                f"workspace {workspace!r} has ${format_usd(outcome.balance_micros)}",
                price=format_usd(micros),
                balance=format_usd(outcome.balance_micros),
                action=action(workspace),
            )

    async def paid(
        self,
        workspace: str,
        micros: int,
        what: str,
        ref: str,
        operation: Callable[[], Awaitable[T]],
    ) -> T:
        """Charge, then run `operation`; if it raises, the charge is given back (void)."""
        await self.charge(workspace, micros, what, ref)
        try:
            return await operation()
        except BaseException:
            await asyncio.shield(self.void(workspace, micros, what, ref))
            raise

    async def refund(self, workspace: str, micros: int, what: str, ref: str = "") -> bool:
        """Give back unused time, only when configured; True if something was credited."""
        if not self._policy.refund_unused or micros <= 0:
            return False
        await self._credit(workspace, micros, REFUND, f"{what} {ref}".strip())
        return True

    async def void(self, workspace: str, micros: int, what: str, ref: str = "") -> None:
        """Give back a charge whose operation failed after it was charged (always)."""
        if micros > 0:
            await self._credit(workspace, micros, VOID, f"{what} {ref}".strip())

    async def top_up(self, workspace: str, micros: int) -> int:
        """Credit a balance (creating the account if needed); returns the new balance."""
        if micros <= 0:
            raise InvalidRequest("a top-up amount must be positive")
        await self._ledger.ensure_workspace(workspace)
        await self._credit(workspace, micros, TOP_UP, "")
        return await self.balance(workspace)

    async def balance(self, workspace: str) -> int:
        await self._ledger.flush()  # buffered metering first
        return await self._ledger.balance(workspace)

    async def usage(self, workspace: str | None = None) -> list[dict[str, Any]]:
        """Per account: balance and, per kind, how many entries and how much (USD strings)."""
        await self._ledger.flush()
        return [
            {
                "workspace": a.workspace,
                "currency": CURRENCY,
                "balance": format_usd(a.balance_micros),
                "balanceMicros": a.balance_micros,
                "spent": format_usd(-sum(t.micros for k, t in a.kinds.items() if k != TOP_UP)),
                "kinds": {
                    kind: {"count": t.count, "amount": format_usd(t.micros), "micros": t.micros}
                    for kind, t in sorted(a.kinds.items())
                },
            }
            for a in await self._ledger.accounts(workspace)
        ]

    async def record(self, workspace: str, micros: int, what: str, ref: str = "") -> None:
        """Debit usage that already happened: never refused, even when enforcing."""
        if micros > 0:
            await self._post(workspace, -micros, what, ref)

    async def sandbox_deleted(self, record: Sandbox) -> None:
        """Settle a deleted sandbox: record overtime, refund unused time if configured."""
        end = record.deleted_at or utcnow()
        lived = int((end - record.created_at).total_seconds())
        if record.expires_at is None:
            await self.record(
                record.workspace,
                price_for(record.spec, lived - UNBOUNDED_HOLD_S),
                OVERTIME,
                record.name,
            )
            return
        unused = int((record.expires_at - end).total_seconds())
        await self.refund(record.workspace, price_for(record.spec, unused), "sandbox", record.name)

    async def _credit(self, workspace: str, micros: int, kind: str, ref: str) -> None:
        await self._post(workspace, micros, kind, ref)

    async def _post(self, workspace: str, amount: int, kind: str, ref: str) -> None:
        """An entry nothing refuses: buffered when not enforcing, else at once (a charge that
        follows must see it)."""
        if self._policy.enforce:
            await self._ledger.post(workspace, amount, kind, ref, floor=None)
        else:
            self._ledger.post_later(workspace, amount, kind, ref)

    async def close(self) -> None:
        """Write what is buffered (clean shutdown)."""
        await self._ledger.flush()


def sandbox_quote(spec: SandboxSpec) -> int:
    """Upfront price of a new sandbox: its rate × its ttl (or expiry, or the default hold)."""
    return price_for(spec, _paid_seconds(spec))


def _paid_seconds(spec: SandboxSpec) -> int:
    bounds = [UNBOUNDED_HOLD_S] if not (spec.ttl or spec.expires) else []
    if spec.ttl:
        bounds.append(parse_duration(spec.ttl))
    if spec.expires:
        left = (parse_timestamp(spec.expires, "expires") - utcnow()).total_seconds()
        bounds.append(max(0, int(left + 0.999)))
    return min(bounds)


def price_for(spec: SandboxSpec, seconds: int) -> int:
    """`seconds` of this sandbox: its tier's rate, or (v0) the rate of its memory size."""
    if seconds <= 0:
        return 0
    if spec.tier:
        return sandbox_price(spec.tier, seconds)
    return memory_price(spec.memory_mb, seconds)

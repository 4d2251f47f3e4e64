"""Ephemeral runs (seed 000 "Run Code"): code in a sandbox of its own, answered when it ends.

Order matters: the request is validated, then charged (xs × timeout, before anything exists,
so a 402 has no side effect), then run from the warm pool (Workloads always deletes the
sandbox), then recorded. A run that could not get a sandbox, or that the platform failed,
gives its charge back; only a finished run is stored.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

from cove.domain.durations import utcnow
from cove.domain.errors import InvalidRequest, NotFound
from cove.domain.pricing import NOMINAL_MICROS, run_price
from cove.domain.programs import Program, clean_files, code_program
from cove.domain.runs import DEFAULT_RUN_TIMEOUT_S, RUN_TIER, Run, new_run_id, tail
from cove.domain.sandbox import TIER_MEMORY_MB
from cove.services.billing import Billing
from cove.services.workloads import Outcome, Placement, Workloads
from cove.store.runs import RunRepo

KIND, NOMINAL = "run", "nominal"  # the ledger's kinds: a run's price, a list's or get's


@dataclass
class RunRequest:
    """One POST /v1/run, parsed; defaults are written once, here."""

    language: str
    code: str | None = None
    files: dict[str, str] | None = None  # path → content, as sent
    entrypoint: str | None = None
    packages: list[str] = field(default_factory=list)
    timeout_s: int = DEFAULT_RUN_TIMEOUT_S


class RunService:
    def __init__(self, repo: RunRepo, workloads: Workloads, billing: Billing) -> None:
        self._repo = repo
        self._workloads = workloads
        self._billing = billing

    async def run(self, workspace: str, req: RunRequest) -> Run:
        program = _program(req)  # every 400 before the charge
        run = Run(new_run_id(), workspace, req.language, req.timeout_s, utcnow())
        price = run_price(req.timeout_s)
        await self._billing.charge(workspace, price, KIND, run.id)
        where = Placement(
            workspace, TIER_MEMORY_MB[RUN_TIER], {}, source="run", name=_sandbox_name(run.id)
        )
        try:
            outcome = await self._workloads.run(where, program, req.timeout_s)
        except BaseException:
            await asyncio.shield(self._billing.void(workspace, price, KIND, run.id))
            raise
        if outcome.status == "error":  # the platform's failure, not the program's
            await self._billing.void(workspace, price, KIND, run.id)
            if outcome.cause is not None:  # no sandbox: nothing ran, answer with why (422, 503)
                raise outcome.cause
        else:
            used = run_price(min(req.timeout_s, math.ceil(outcome.duration_ms / 1000)))
            await self._billing.refund(workspace, price - used, KIND, run.id)  # when configured
        _finish(run, outcome)
        await self._repo.insert(run)
        return run

    async def get(self, workspace: str, run_id: str) -> Run:
        """A run of this workspace (nominal price, like a sandbox get; a 404 costs nothing)."""
        run = await self._repo.get(workspace, run_id)
        if run is None:
            raise NotFound(f"run {run_id!r} not found")
        await self._billing.charge(workspace, NOMINAL_MICROS, NOMINAL, f"get {run_id}")
        return run

    async def recent(self, workspace: str, limit: int) -> list[Run]:
        """Newest first (nominal price, like a sandbox list)."""
        await self._billing.charge(workspace, NOMINAL_MICROS, NOMINAL, "list runs")
        return await self._repo.recent(workspace, limit)


def _program(req: RunRequest) -> Program:
    if req.code is not None and req.files is not None:
        raise InvalidRequest("code and files are mutually exclusive: give one")
    files = clean_files(req.files) if req.files is not None else None
    return code_program(req.language, req.code, files, req.entrypoint, req.packages)


def _sandbox_name(run_id: str) -> str:
    """run_1a2b… → run-1a2b…: the run's sandbox is recognisable in sandbox lists meanwhile."""
    return run_id.replace("_", "-")


def _finish(run: Run, outcome: Outcome) -> None:
    run.status = outcome.status
    run.stdout = tail(outcome.stdout)
    run.stderr = tail(outcome.stderr)
    run.exit_code = outcome.exit_code
    run.duration_ms = outcome.duration_ms
    run.completed_at = utcnow()
    run.error = outcome.error
    if outcome.status == "timeout" and not run.error:
        run.error = f"the run passed its timeout of {run.timeout_s} s and was killed"

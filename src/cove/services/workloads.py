"""Run a Program to completion in a sandbox of its own: runs and job tasks share this.

The sandbox comes from the warm pool (an ordinary create), gets the files, runs the set-up
steps and the command under a deadline, and is always deleted afterwards, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from cove.domain.errors import CoveError
from cove.domain.programs import WORKDIR, Program
from cove.domain.sandbox import SandboxSpec
from cove.services.processes import ExecRequest
from cove.services.sandboxes import CreateSandbox, LiveSandbox, SandboxService

SETUP_TIMEOUT_S = 300  # package installs get their own budget, on top of the run's timeout
_SANDBOX_SLACK_S = 60  # the sandbox's ttl outlives the run a little: cleanup is ours, not expiry


@dataclass
class Outcome:
    status: str  # completed (exit 0) | failed (exit ≠ 0 or set-up failed) | timeout | error
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    duration_ms: int = 0
    error: str | None = None  # why, when status is error/failed before the command ran
    # The platform error that kept the workload from starting (no sandbox could be had, e.g.
    # the workspace's sandbox limit): nothing ran, so a caller may answer with it instead.
    cause: CoveError | None = None


@dataclass(frozen=True)
class Placement:
    """Where a workload runs: its workspace, memory, envs and a label for the sandbox."""

    workspace: str
    memory_mb: int
    envs: dict[str, str]
    source: str = "run"  # the sandbox's `source`: run | job
    name: str | None = None  # the sandbox's name (generated when None)


class Workloads:
    def __init__(self, sandboxes: SandboxService) -> None:
        self._sandboxes = sandboxes

    async def run(self, where: Placement, program: Program, timeout_s: int) -> Outcome:
        started = time.monotonic()
        ttl = timeout_s + SETUP_TIMEOUT_S + _SANDBOX_SLACK_S
        spec = SandboxSpec(memory_mb=where.memory_mb, envs=dict(where.envs), ttl=f"{ttl}s")
        try:
            live = await self._sandboxes.create(
                where.workspace, CreateSandbox(spec=spec, name=where.name, source=where.source)
            )
        except CoveError as exc:
            return Outcome("error", error=exc.message, duration_ms=_ms(started), cause=exc)
        try:
            outcome = await self._run_in(live, program, timeout_s)
        except CoveError as exc:  # e.g. the sandbox died under the workload
            outcome = Outcome("error", error=exc.message)
        finally:
            with contextlib.suppress(CoveError):  # e.g. already expiring
                await self._sandboxes.delete(where.workspace, live.record.name, "run finished")
        outcome.duration_ms = _ms(started)
        return outcome

    async def _run_in(self, live: LiveSandbox, program: Program, timeout_s: int) -> Outcome:
        assert live.files is not None
        await asyncio.gather(
            *(live.files.write(f"{WORKDIR}/{path}", data) for path, data in program.files.items())
        )
        for step in program.setup:
            done = await self.exec(live, step, program.env, SETUP_TIMEOUT_S)
            if done.status != "completed":
                done.error = f"set-up step failed: {step}"
                done.status = "failed" if done.status != "timeout" else "timeout"
                return done
        return await self.exec(live, program.command, program.env, timeout_s)

    @staticmethod
    async def exec(live: LiveSandbox, command: str, env: dict[str, str], timeout_s: int) -> Outcome:
        """One command in WORKDIR until it exits or timeout_s passes (then killed)."""
        processes = live.require_running().processes
        assert processes is not None
        req = ExecRequest(command=command, working_dir=WORKDIR, env=env, timeout=timeout_s)
        proc = await processes.exec(req)
        await proc.done.wait()  # the manager kills it at the deadline, so this ends
        timed_out = proc.stop_requested == "killed"
        return Outcome(
            status="timeout" if timed_out else ("completed" if proc.exit_code == 0 else "failed"),
            stdout=proc.output.stdout.text(),
            stderr=proc.output.stderr.text(),
            exit_code=proc.exit_code,
        )


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)

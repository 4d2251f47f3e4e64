"""Terminal sessions: shells on a pty that WebSocket clients attach to.

Without a session id every connection gets its own shell, killed when the socket closes. With
one (`sessionId`), the shell outlives its sockets so a reloaded page finds it again (held output
is replayed on attach); a session nobody is attached to is killed after DETACHED_TTL_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cove.services.processes.manager import ExecRequest, Process, ProcessManager

DETACHED_TTL_S = 600.0


class TerminalSessions:
    def __init__(self, processes: ProcessManager) -> None:
        self._processes = processes
        self._attached: dict[int, int] = {}  # id(process) -> open sockets
        self._reapers: dict[int, asyncio.TimerHandle] = {}

    async def attach(self, req: ExecRequest, session: bool) -> Process:
        """The running shell named req.name when session, else a new one from req."""
        proc = self._processes.running_named(req.name or "") if session else None
        if proc is None or not proc.request.tty:
            proc = await self._processes.exec(req)
        key = id(proc)
        self._attached[key] = self._attached.get(key, 0) + 1
        reaper = self._reapers.pop(key, None)
        if reaper is not None:
            reaper.cancel()
        return proc

    def detach(self, proc: Process, session: bool) -> None:
        key = id(proc)
        self._attached[key] = self._attached.get(key, 1) - 1
        if self._attached[key] > 0:
            return
        del self._attached[key]
        if proc.status != "running":
            return
        if not session:
            self._kill(proc)
            return
        loop = asyncio.get_running_loop()
        self._reapers[key] = loop.call_later(DETACHED_TTL_S, self._reap, proc)

    def _reap(self, proc: Process) -> None:
        self._reapers.pop(id(proc), None)
        if self._attached.get(id(proc), 0) == 0 and proc.status == "running":
            self._kill(proc)

    def _kill(self, proc: Process) -> None:
        async def kill() -> None:
            with contextlib.suppress(Exception):
                await self._processes.kill(proc, signal.SIGKILL, "killed")

        self._processes.track(kill())

    def close(self) -> None:
        for reaper in self._reapers.values():
            reaper.cancel()
        self._reapers.clear()

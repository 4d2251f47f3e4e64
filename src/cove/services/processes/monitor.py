"""Port monitors: POST a callback URL whenever a monitored process starts listening on a port.

The callback is a plain HTTP POST from the cove host with JSON {"pid", "name", "port",
"address", "protocol"}, one per newly seen port. Because it leaves from the host (Blaxel's
leaves from inside the sandbox), it is kept narrow: http(s) only, no redirects, a short
timeout, at most MAX_MONITORS per sandbox, and the answer is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from cove.domain.errors import CoveError, InvalidRequest, LimitExceeded
from cove.runtime.base import PortInfo

if TYPE_CHECKING:
    from cove.services.processes.manager import Process, ProcessManager

POLL_S = 0.2
CALLBACK_TIMEOUT_S = 5.0
MAX_MONITORS = 64
log = logging.getLogger(__name__)


def check_callback(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("callback must be an http(s) URL")
    return url


class PortMonitors:
    def __init__(self, processes: ProcessManager) -> None:
        self._processes = processes
        self._tasks: dict[int, asyncio.Task[None]] = {}

    def start(self, proc: Process, callback: str) -> None:
        check_callback(callback)
        self.stop(proc)
        self._tasks = {pid: t for pid, t in self._tasks.items() if not t.done()}
        if len(self._tasks) >= MAX_MONITORS:
            raise LimitExceeded(f"at most {MAX_MONITORS} port monitors per sandbox")
        self._tasks[proc.pid] = asyncio.ensure_future(self._watch(proc, callback))

    def stop(self, proc: Process) -> bool:
        task = self._tasks.pop(proc.pid, None)
        if task is None:
            return False
        task.cancel()
        return True

    async def _watch(self, proc: Process, callback: str) -> None:
        try:
            await self._poll(proc, callback)
        except CoveError as exc:  # the sandbox went away under the monitor
            log.info("port monitor of %s ended: %s", proc.name, exc.message)

    async def _poll(self, proc: Process, callback: str) -> None:
        seen: set[int] = set()
        async with httpx.AsyncClient(timeout=CALLBACK_TIMEOUT_S, follow_redirects=False) as http:
            while not proc.done.is_set():
                for info in await self._processes.ports(proc):
                    if info.port not in seen:
                        seen.add(info.port)
                        await self._notify(http, callback, proc, info)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.done.wait(), POLL_S)

    @staticmethod
    async def _notify(http: httpx.AsyncClient, url: str, proc: Process, info: PortInfo) -> None:
        body = {
            "pid": str(proc.pid),
            "name": proc.name,
            "port": info.port,
            "address": info.address,
            "protocol": info.family,
        }
        try:
            await http.post(url, json=body)
        except httpx.HTTPError as exc:
            log.info("port monitor callback %s failed: %s", url, exc)

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()

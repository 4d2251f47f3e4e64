"""Processes of one sandbox: names, log buffers, waits and timeouts.

Lives above runtime/ so every backend gets the same semantics; the backend only spawns argv
with three fds and reports the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from dataclasses import dataclass, field
from datetime import datetime

from cove.domain.durations import utcnow
from cove.domain.errors import InvalidRequest, NotFound, Unavailable
from cove.runtime.base import Exited, Runtime, RuntimeError_, SandboxHandle

# Each stream keeps its newest LOG_LIMIT bytes: older output is dropped from the front, so a
# chatty process never grows the server's memory, and the end of the output is always kept.
LOG_LIMIT = 4 * 1024 * 1024
MAX_WAIT_S = 60.0  # waitForCompletion answers after this at the latest, process still running
_EOF_GRACE_S = 0.2  # a background grandchild may hold the pipes after the process exits
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class ExecRequest:
    command: str
    name: str | None = None
    working_dir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    wait_for_completion: bool = False
    timeout: float | None = None  # seconds; None or 0 = no limit


class LogBuffer:
    def __init__(self, limit: int = LOG_LIMIT) -> None:
        self._data = bytearray()
        self._limit = limit

    def append(self, chunk: bytes) -> None:
        self._data += chunk
        if len(self._data) > self._limit:
            del self._data[: len(self._data) - self._limit]

    def text(self) -> str:
        return self._data.decode("utf-8", errors="replace")


@dataclass
class Process:
    pid: int
    name: str
    command: str
    working_dir: str
    started_at: datetime
    status: str = "running"  # running | completed | failed | killed | stopped
    exit_code: int | None = None
    completed_at: datetime | None = None
    stdout: LogBuffer = field(default_factory=LogBuffer)
    stderr: LogBuffer = field(default_factory=LogBuffer)
    logs: LogBuffer = field(default_factory=LogBuffer)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    stop_requested: str | None = None  # "stopped" or "killed" once the user asked

    def finish(self, exited: Exited) -> None:
        self.exit_code = exited.exit_code
        self.completed_at = utcnow()
        if self.stop_requested:
            self.status = self.stop_requested
        else:
            self.status = "completed" if exited.exit_code == 0 else "failed"
        self.done.set()


class ProcessManager:
    def __init__(self, runtime: Runtime, handle: SandboxHandle, env: dict[str, str]) -> None:
        self._runtime = runtime
        self._handle = handle
        self._env = env
        self._by_pid: dict[int, Process] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def set_env(self, env: dict[str, str]) -> None:
        """The sandbox's envs for processes started from now on (a PUT replaced them)."""
        self._env = dict(env)

    async def exec(self, req: ExecRequest) -> Process:
        name = req.name or "proc-" + secrets.token_hex(4)
        if any(p.name == name and p.status == "running" for p in self._by_pid.values()):
            raise InvalidRequest(f"a process named {name!r} is already running")
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        try:
            spawned = await self._runtime.spawn(
                self._handle,
                ["/bin/sh", "-c", req.command],
                {"PATH": DEFAULT_PATH, "HOME": "/root", **self._env, **req.env},
                req.working_dir or "/",
                (self._devnull, out_w, err_w),
            )
        except BaseException as exc:
            os.close(out_r)
            os.close(err_r)
            if isinstance(exc, RuntimeError_):
                raise Unavailable(f"cannot start the process: {exc.reason}") from None
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        proc = Process(spawned.pid, name, req.command, req.working_dir or "/", utcnow())
        self._by_pid[proc.pid] = proc
        self._track(self._supervise(proc, spawned.exited, out_r, err_r, req.timeout))
        if req.wait_for_completion:
            await self.wait(proc, MAX_WAIT_S)
        return proc

    def _track(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _supervise(
        self,
        proc: Process,
        exited: asyncio.Future[Exited],
        out_r: int,
        err_r: int,
        timeout: float | None,
    ) -> None:
        eofs = [_pump(out_r, (proc.stdout, proc.logs)), _pump(err_r, (proc.stderr, proc.logs))]
        try:
            if timeout:
                try:
                    await asyncio.wait_for(asyncio.shield(exited), timeout)
                except TimeoutError:
                    await self.kill(proc, signal.SIGKILL, "killed")
            result = await exited
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*eofs), _EOF_GRACE_S)
        except Exception:  # sandbox gone: the process is lost with it
            result = Exited(code=None, signal=signal.SIGKILL)
        proc.finish(result)

    async def wait(self, proc: Process, timeout: float) -> Process:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.done.wait(), timeout)
        return proc

    def get(self, ref: str) -> Process:
        """By pid or name; the newest process wins when a name was reused."""
        if ref.isdigit() and int(ref) in self._by_pid:
            return self._by_pid[int(ref)]
        for proc in reversed(list(self._by_pid.values())):
            if proc.name == ref:
                return proc
        raise NotFound(f"process {ref!r} not found")

    def list(self) -> list[Process]:
        return list(self._by_pid.values())

    async def kill(self, proc: Process, signo: int, as_status: str) -> None:
        if proc.status != "running":
            raise NotFound(f"process {proc.name!r} is not running")
        proc.stop_requested = as_status
        try:
            await self._runtime.signal(self._handle, proc.pid, signo)
        except RuntimeError_ as exc:
            raise Unavailable(f"cannot signal the process: {exc.reason}") from None

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(OSError):
            os.close(self._devnull)


def _pump(fd: int, sinks: tuple[LogBuffer, ...]) -> asyncio.Future[None]:
    """Read fd into the sinks until EOF without a thread; resolves at EOF."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    os.set_blocking(fd, False)

    def on_readable() -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            for sink in sinks:
                sink.append(chunk)
            return
        loop.remove_reader(fd)
        os.close(fd)
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, on_readable)
    return done

"""Processes of one sandbox: names, output, stdin, waits, timeouts, stops and restarts.

Lives above runtime/ so every backend gets the same semantics; the backend only spawns argv
with three fds (or a pty) and reports the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from cove.domain.durations import utcnow
from cove.domain.errors import Conflict, CoveError, InvalidRequest, NotFound, Unavailable
from cove.runtime.base import Exited, PortInfo, Runtime, RuntimeError_, SandboxHandle
from cove.services.processes.monitor import PortMonitors
from cove.services.processes.output import Output
from cove.services.processes.stdio import Stdio, write_all
from cove.services.processes.table import ProcessTable
from cove.services.processes.terminals import TerminalSessions

MAX_WAIT_S = 60.0  # waitForCompletion / waitForPorts answer after this at the latest
KEEP_ALIVE_TIMEOUT_S = 600.0  # keepAlive without a timeout still ends (Blaxel default)
STOP_GRACE_S = 5.0  # DELETE /process/{id}: SIGTERM, then SIGKILL if still running after this
KEEP_ALIVE_TOUCH_S = 10.0
PORT_POLL_S = 0.05
_EOF_GRACE_S = 0.2  # a background grandchild may hold the pipes after the process exits
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class StdinConflict(Conflict):
    code = "NO_STDIN"


class BadGateway(CoveError):
    """Nothing answers on the sandbox port a request was proxied to."""

    status, code = 502, "BAD_GATEWAY"


@dataclass
class ExecRequest:
    command: str
    name: str | None = None
    working_dir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    wait_for_completion: bool = False
    timeout: float | None = None  # seconds; None = default, 0 = no limit
    keep_alive: bool = False
    restart_on_failure: bool = False
    max_restarts: int = 0
    wait_for_ports: list[int] = field(default_factory=list)
    stdin: bool = False
    tty: bool = False  # cove extension: run on a pty (TUI programs), output on stdout
    cols: int = 80
    rows: int = 24


@dataclass
class Process:
    pid: int
    name: str
    request: ExecRequest
    started_at: datetime
    status: str = "running"  # running | completed | failed | killed | stopped
    exit_code: int | None = None
    completed_at: datetime | None = None
    restart_count: int = 0
    output: Output = field(default_factory=Output)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    stop_requested: str | None = None  # "stopped" or "killed" once the user asked
    stdio: Stdio | None = None
    pids: list[int] = field(default_factory=list)  # every pid it ran under (restarts)
    held_at_finish: int = 0  # output bytes when it finished (the table's budget)

    @property
    def command(self) -> str:
        return self.request.command

    @property
    def working_dir(self) -> str:
        return self.request.working_dir

    def finish(self, exited: Exited) -> None:
        self.exit_code = exited.exit_code
        self.completed_at = utcnow()
        if self.stop_requested:
            self.status = self.stop_requested
        else:
            self.status = "completed" if exited.exit_code == 0 else "failed"
        self.output.close()
        self.done.set()


def _spawn_error(exc: BaseException, req: ExecRequest) -> BaseException:
    """The user-facing error for a failed spawn (anything unexpected passes through)."""
    if isinstance(exc, RuntimeError_):
        return Unavailable(f"cannot start the process: {exc.reason}")
    if isinstance(exc, OSError):  # reported by the zygote: bad workingDir, no /bin/sh
        return InvalidRequest(f"cannot start the process in {req.working_dir!r}: {exc.strerror}")
    if isinstance(exc, ValueError):  # NUL bytes, argv+env too large
        return InvalidRequest(f"cannot start the process: {exc}")
    return exc


class ProcessManager:
    def __init__(
        self,
        runtime: Runtime,
        handle: SandboxHandle,
        env: dict[str, str],
        on_activity: Callable[[], None] | None = None,
    ) -> None:
        self._runtime = runtime
        self._handle = handle
        self._env = env
        self._on_activity = on_activity
        self._table = ProcessTable()
        self._starting: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.monitors = PortMonitors(self)
        self.terminals = TerminalSessions(self)

    def set_env(self, env: dict[str, str]) -> None:
        """The sandbox's envs for processes started from now on (a PUT replaced them)."""
        self._env = dict(env)

    # -- start ----------------------------------------------------------------------------------

    async def exec(self, req: ExecRequest) -> Process:
        name = req.name or "proc-" + secrets.token_hex(4)
        if self._table.running_named(name) is not None or name in self._starting:
            raise InvalidRequest(f"a process named {name!r} is already running")
        proc = Process(0, name, req, utcnow())
        self._starting.add(name)  # two concurrent execs of one name: the second is a 400
        try:
            exited = await self._spawn(proc)
        finally:
            self._starting.discard(name)
        self._table.add(proc)
        self._table.add_pid(proc)
        self.track(self._supervise(proc, exited))
        if req.wait_for_ports:
            await self.wait_ports(proc, req.wait_for_ports, MAX_WAIT_S)
        if req.wait_for_completion:
            await self.wait(proc, MAX_WAIT_S)
        return proc

    async def _spawn(self, proc: Process) -> asyncio.Future[Exited]:
        """Start (or restart) proc's command with fresh stdio; sets proc.pid and proc.stdio."""
        req = proc.request
        try:
            stdio = Stdio.open(self._runtime, self._handle, req.tty, req.stdin, req.cols, req.rows)
        except OSError as exc:
            raise Unavailable(f"cannot set up the process's stdio: {exc.strerror}") from None
        try:
            spawned = await self._runtime.spawn(
                self._handle,
                ["/bin/sh", "-c", req.command],
                {
                    "PATH": DEFAULT_PATH,
                    "HOME": "/root",
                    **self._tty_env(req),
                    **self._env,
                    **req.env,
                },
                req.working_dir or "/",
                stdio.child_fds(),
                tty=req.tty,
            )
        except BaseException as exc:
            stdio.close()
            raise _spawn_error(exc, req) from None
        finally:
            stdio.close_child_ends()
        proc.pid = spawned.pid
        proc.stdio = stdio
        return spawned.exited

    @staticmethod
    def _tty_env(req: ExecRequest) -> dict[str, str]:
        return {"TERM": "xterm-256color"} if req.tty else {}

    def track(self, coro: object) -> None:
        """Run coro in the background; cancelled when the sandbox's processes close."""
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- supervise ------------------------------------------------------------------------------

    async def _supervise(self, proc: Process, exited: asyncio.Future[Exited]) -> None:
        req = proc.request
        timeout = req.timeout
        if timeout is None and req.keep_alive:
            timeout = KEEP_ALIVE_TIMEOUT_S
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        if req.keep_alive:
            self.track(self._keep_alive(proc))
        while True:
            result = await self._run_once(proc, exited, deadline)
            if not self._should_restart(proc, result):
                break
            proc.restart_count += 1
            await self._end_group(proc)
            try:
                exited = await self._spawn(proc)
            except Exception:
                break
            self._table.add_pid(proc)
        proc.finish(result)
        self._table.finished(proc)

    async def _run_once(
        self, proc: Process, exited: asyncio.Future[Exited], deadline: float | None
    ) -> Exited:
        stdio = proc.stdio
        assert stdio is not None
        eofs = stdio.start(proc.output)
        try:
            if deadline is not None:
                remaining = max(0.0, deadline - asyncio.get_running_loop().time())
                try:
                    await asyncio.wait_for(asyncio.shield(exited), remaining)
                except TimeoutError:
                    with contextlib.suppress(Exception):
                        await self.kill(proc, signal.SIGKILL, "killed")
            result = await exited
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*eofs), _EOF_GRACE_S)
        except Exception:  # sandbox gone: the process is lost with it
            result = Exited(code=None, signal=signal.SIGKILL)
        stdio.after_exit()
        return result

    async def _end_group(self, proc: Process) -> None:
        """Before a restart: what the failed run left in its process group (each process is a
        session of its own) goes too, or a leftover child could hold the port the restarted
        command needs."""
        with contextlib.suppress(RuntimeError_, OSError):
            await self._runtime.signal(self._handle, proc.pid, signal.SIGKILL)

    @staticmethod
    def _should_restart(proc: Process, result: Exited) -> bool:
        req = proc.request
        return (
            req.restart_on_failure
            and result.exit_code != 0
            and proc.stop_requested is None
            and proc.restart_count < req.max_restarts
        )

    async def _keep_alive(self, proc: Process) -> None:
        """keepAlive: the sandbox counts as in use (no idle expiry) while the process runs."""
        while not proc.done.is_set() and self._on_activity is not None:
            self._on_activity()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.done.wait(), KEEP_ALIVE_TOUCH_S)

    # -- queries --------------------------------------------------------------------------------

    async def wait(self, proc: Process, timeout: float) -> Process:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.done.wait(), timeout)
        return proc

    def get(self, ref: str) -> Process:
        """By pid or name; the newest process wins when a name was reused."""
        proc = self._table.by_pid(int(ref)) if ref.isdigit() else None
        proc = proc or self._table.by_name(ref)
        if proc is None:
            raise NotFound(f"process {ref!r} not found")
        return proc

    def running_named(self, name: str) -> Process | None:
        return self._table.running_named(name)

    def list(self) -> list[Process]:
        return self._table.all()

    async def ports(self, proc: Process | None) -> list[PortInfo]:
        """Listening ports of proc's session (the process and its children), or all."""
        pid = proc.pid if proc is not None else None
        if proc is not None and proc.status != "running":
            return []
        try:
            return await self._runtime.listening_ports(self._handle, pid)
        except RuntimeError_ as exc:
            raise Unavailable(f"cannot list ports: {exc.reason}") from None

    async def wait_ports(self, proc: Process, ports: list[int], timeout: float) -> bool:
        """Until every port listens in the sandbox, the process ended, or timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        wanted = set(ports)
        while loop.time() < deadline and not proc.done.is_set():
            if wanted <= {p.port for p in await self.ports(None)}:
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.done.wait(), PORT_POLL_S)
        return False

    async def connect(self, port: int) -> socket.socket:
        """A connected, non-blocking TCP socket to 127.0.0.1:port inside the sandbox."""
        if not 0 < port < 65536:
            raise InvalidRequest("port must be from 1 to 65535")
        try:
            return await self._runtime.connect(self._handle, port)
        except (OSError, TimeoutError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "timed out"
            raise BadGateway(f"nothing answers on port {port} in the sandbox: {why}") from None
        except RuntimeError_ as exc:
            raise Unavailable(f"cannot reach the sandbox: {exc.reason}") from None

    # -- control --------------------------------------------------------------------------------

    async def kill(self, proc: Process, signo: int, as_status: str) -> None:
        if proc.status != "running":
            raise NotFound(f"process {proc.name!r} is not running")
        proc.stop_requested = as_status
        try:
            await self._runtime.signal(self._handle, proc.pid, signo)
        except (RuntimeError_, OSError) as exc:
            raise Unavailable(f"cannot signal the process: {exc}") from None

    async def stop(self, proc: Process) -> None:
        """SIGTERM now, SIGKILL if the process is still there after STOP_GRACE_S."""
        await self.kill(proc, signal.SIGTERM, "stopped")
        self.track(self._escalate(proc))

    async def _escalate(self, proc: Process) -> None:
        await self.wait(proc, STOP_GRACE_S)
        if not proc.done.is_set():
            with contextlib.suppress(Exception):
                await self._runtime.signal(self._handle, proc.pid, signal.SIGKILL)

    async def write_stdin(self, proc: Process, data: bytes) -> None:
        stdio = proc.stdio
        if proc.status != "running" or stdio is None or stdio.stdin is None:
            raise StdinConflict(f"process {proc.name!r} has no open stdin")
        async with stdio.write_lock:
            try:
                await write_all(stdio.stdin, data)
            except (BrokenPipeError, OSError) as exc:
                raise StdinConflict(f"stdin of process {proc.name!r} is closed: {exc}") from None

    def close_stdin(self, proc: Process) -> None:
        """EOF on stdin (idempotent). On a pty that is the EOF character, not a hang-up."""
        stdio = proc.stdio
        if stdio is None:
            return
        if proc.request.tty:
            if stdio.stdin is not None and proc.status == "running":
                with contextlib.suppress(OSError):
                    os.write(stdio.stdin, b"\x04")
            return
        stdio.close_stdin()

    def resize(self, proc: Process, cols: int, rows: int) -> None:
        if not proc.request.tty:
            raise StdinConflict(f"process {proc.name!r} does not run on a terminal")
        if proc.stdio is not None:
            proc.stdio.resize(cols, rows)

    def close(self) -> None:
        self.monitors.close()
        self.terminals.close()
        for task in list(self._tasks):
            task.cancel()
        for proc in self._table.all():
            if proc.stdio is not None:
                proc.stdio.close()

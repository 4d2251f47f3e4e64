"""Host side of the zygote protocol (see zygote.c): one SOCK_SEQPACKET connection per sandbox.

No threads on the hot path: requests go out with a non-blocking sendmsg, replies arrive through
loop.add_reader. Replies come from inside the sandbox, so they are untrusted: exactly 12 bytes,
matched by id, anything else is dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import struct
import subprocess
from pathlib import Path

from cove.runtime.base import Exited, SandboxGone, SpawnedProcess

_REPLY = struct.Struct("<Iii")
_SPAWN_HDR = struct.Struct("<IIII")
_SIGNAL = struct.Struct("<IIII")
MAX_MESSAGE = 200 * 1024  # below the default SEQPACKET send buffer and the zygote's 256 KiB buffer

STARTED, EXITED, SPAWN_FAILED, SIGNAL_RESULT = 1, 2, 3, 4
SPAWN, SIGNAL, SPAWN_TTY = 1, 2, 3


def build_zygote(source: Path, binary: Path) -> Path:
    """Compile the zygote if missing or older than its source (static, so any image can run it)."""
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_name(binary.name + f".tmp{os.getpid()}")
    try:
        proc = subprocess.run(
            ["gcc", "-static", "-Os", "-o", str(tmp), str(source)], capture_output=True, text=True
        )
    except FileNotFoundError:
        from cove.runtime.base import RuntimeError_

        raise RuntimeError_(
            "cove needs gcc to build its sandbox init (apt-get install gcc)"
        ) from None
    if proc.returncode != 0:
        from cove.runtime.base import RuntimeError_

        raise RuntimeError_(f"building the zygote failed: {proc.stderr.strip()[-2000:]}")
    os.chmod(tmp, 0o755)
    os.replace(tmp, binary)
    return binary


def decode_status(status: int) -> Exited:
    """Raw wait status → Exited (os.waitstatus_to_exitcode semantics, but never raises)."""
    if os.WIFEXITED(status):
        return Exited(code=os.WEXITSTATUS(status), signal=None)
    if os.WIFSIGNALED(status):
        return Exited(code=None, signal=os.WTERMSIG(status))
    return Exited(code=None, signal=None)


class _Pending:
    __slots__ = ("started", "exited")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.started: asyncio.Future[int] = loop.create_future()
        self.exited: asyncio.Future[Exited] = loop.create_future()


class ZygoteClient:
    """Connection to one sandbox's zygote. Create with `await ZygoteClient.connect(path)`."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self._sock = sock
        self._loop = loop
        self._ids = itertools.count(1)
        self._spawns: dict[int, _Pending] = {}
        self._signals: dict[int, asyncio.Future[int]] = {}
        self.closed = False
        loop.add_reader(sock.fileno(), self._on_readable)

    @classmethod
    async def connect(cls, path: Path, timeout: float = 2.0) -> ZygoteClient:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, str(path)), timeout)
        except BaseException:
            sock.close()
            raise
        return cls(sock, loop)

    # -- requests -------------------------------------------------------------------------------

    async def spawn(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        stdio: tuple[int, int, int],
        tty: bool = False,
    ) -> SpawnedProcess:
        """With tty, stdio[0] must be a pty slave: it becomes the controlling terminal."""
        if not argv:
            raise ValueError("argv must not be empty")
        strings = [cwd, *argv, *(f"{k}={v}" for k, v in env.items())]
        if any("\0" in s for s in strings) or any("=" in k or not k for k in env):
            raise ValueError(
                "argv, env and cwd must not contain NUL; env keys no '=' and not empty"
            )
        rid = next(self._ids) & 0xFFFFFFFF
        body = _SPAWN_HDR.pack(SPAWN_TTY if tty else SPAWN, rid, len(argv), len(env)) + b"".join(
            s.encode() + b"\0" for s in strings
        )
        if len(body) > MAX_MESSAGE:
            raise ValueError(f"argv+env too large ({len(body)} bytes > {MAX_MESSAGE})")
        pending = _Pending(self._loop)
        self._spawns[rid] = pending
        try:
            self._send(body, list(stdio))
            # A zygote built before SPAWN_TTY existed (sandbox older than this server) never
            # answers that request: don't wait forever for it.
            pid = await (asyncio.wait_for(pending.started, 5.0) if tty else pending.started)
        except BaseException:
            self._spawns.pop(rid, None)
            raise
        return SpawnedProcess(pid=pid, exited=pending.exited)

    async def signal(self, pid: int, signo: int) -> int:
        """Signal pid's process group (or pid). Returns 0 or the errno from inside the sandbox."""
        rid = next(self._ids) & 0xFFFFFFFF
        fut: asyncio.Future[int] = self._loop.create_future()
        self._signals[rid] = fut
        try:
            self._send(_SIGNAL.pack(SIGNAL, rid, pid & 0xFFFFFFFF, signo & 0xFFFFFFFF), [])
            return await fut
        finally:
            self._signals.pop(rid, None)

    def _send(self, data: bytes, fds: list[int]) -> None:
        if self.closed:
            raise SandboxGone("sandbox init is gone")
        anc = (
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
            if fds
            else []
        )
        try:
            # One datagram; the zygote drains quickly, so EAGAIN here means it is wedged or dead.
            self._sock.sendmsg([data], anc)
        except (BlockingIOError, BrokenPipeError, ConnectionError, OSError) as exc:
            self._fail_all(f"sandbox init unreachable: {exc}")
            raise SandboxGone("sandbox init is gone") from exc

    # -- replies --------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        while True:
            try:
                data = self._sock.recv(64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._fail_all(f"sandbox init connection failed: {exc}")
                return
            if not data:
                self._fail_all("sandbox init exited")
                return
            if len(data) == _REPLY.size:
                self._dispatch(*_REPLY.unpack(data))

    def _dispatch(self, rid: int, kind: int, value: int) -> None:
        if kind == SIGNAL_RESULT:
            fut = self._signals.get(rid)
            if fut is not None and not fut.done():
                fut.set_result(value)
            return
        pending = self._spawns.get(rid)
        if pending is None:
            return
        if kind == STARTED and not pending.started.done():
            pending.started.set_result(value)
        elif kind == SPAWN_FAILED and not pending.started.done():
            del self._spawns[rid]
            pending.started.set_exception(OSError(value, f"spawn failed: {os.strerror(value)}"))
        elif kind == EXITED and pending.started.done():
            del self._spawns[rid]
            if not pending.exited.done():
                pending.exited.set_result(decode_status(value))

    def _fail_all(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        for pending in self._spawns.values():
            for fut in (pending.started, pending.exited):
                if not fut.done():
                    fut.set_exception(SandboxGone(why))
                    fut.exception()  # nobody may await exited; don't log "never retrieved"
        for fut in self._signals.values():
            if not fut.done():
                fut.set_exception(SandboxGone(why))
        self._spawns.clear()
        self._signals.clear()

    def close(self) -> None:
        """Drop the connection (the zygote keeps running and accepts the next one)."""
        self._fail_all("connection closed by host")

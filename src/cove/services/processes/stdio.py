"""The host ends of a process's stdio: pipes (stdout, stderr, optional stdin) or one pty.

No threads: reads and writes are non-blocking fds driven by the event loop, so a process that
floods its output or never reads its stdin costs one fd, not a thread, and stalls nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import termios

from cove.runtime.base import Runtime, SandboxHandle
from cove.services.processes.output import Output

STDIN_WRITE_TIMEOUT_S = 30.0  # a process that stops reading its stdin fails the write, not hangs
READ_CHUNK = 65536


class Pump:
    """Reads fd into output until EOF (EIO on a pty master counts as EOF)."""

    def __init__(self, fd: int, output: Output, stream: str, owns_fd: bool) -> None:
        self._fd = fd
        self._output = output
        self._stream = stream
        self._owns = owns_fd
        self._loop = asyncio.get_running_loop()
        self.eof: asyncio.Future[None] = self._loop.create_future()
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if chunk:
            self._output.append(self._stream, chunk)
        else:
            self.stop()

    def stop(self) -> None:
        if self.eof.done():
            return
        self._loop.remove_reader(self._fd)
        if self._owns:
            os.close(self._fd)
        self.eof.set_result(None)


class Stdio:
    def __init__(self) -> None:
        self._child: list[int] = []  # fds handed to the spawn, closed right after it
        self._readers: list[tuple[int, str, bool]] = []  # (fd, stream, pump owns it)
        self._pumps: list[Pump] = []
        self.stdin: int | None = None
        self._master: int | None = None
        self.write_lock = asyncio.Lock()

    @classmethod
    def open(
        cls, runtime: Runtime, handle: SandboxHandle, tty: bool, stdin: bool, cols: int, rows: int
    ) -> Stdio:
        self = cls()
        try:
            if tty:
                master, slave = runtime.open_pty(handle)
                self._master = self.stdin = master
                os.set_blocking(master, False)
                self._child = [slave]
                self._readers = [(master, "stdout", False)]
                self.resize(cols, rows)
            else:
                self._open_pipes(stdin)
        except BaseException:
            self.close_child_ends()
            self.close()
            raise
        return self

    def _open_pipes(self, stdin: bool) -> None:
        if stdin:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            self._child.append(in_r)
            self.stdin = in_w
            os.set_blocking(in_w, False)
        else:
            self._child.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        for stream in ("stdout", "stderr"):
            r, w = os.pipe2(os.O_CLOEXEC)
            self._readers.append((r, stream, True))
            self._child.append(w)

    def child_fds(self) -> tuple[int, int, int]:
        if len(self._child) == 1:  # pty: the slave is all three
            return (self._child[0],) * 3  # type: ignore[return-value]
        return tuple(self._child)  # type: ignore[return-value]

    def close_child_ends(self) -> None:
        for fd in self._child:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._child = []

    def start(self, output: Output) -> list[asyncio.Future[None]]:
        """Start pumping the output fds into output; futures resolve at each EOF."""
        self._pumps = [Pump(fd, output, stream, owns) for fd, stream, owns in self._readers]
        self._readers = []
        return [p.eof for p in self._pumps]

    def resize(self, cols: int, rows: int) -> None:
        if self._master is not None:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def close_stdin(self) -> None:
        if self.stdin is not None and self.stdin != self._master:
            with contextlib.suppress(OSError):
                os.close(self.stdin)
        if self.stdin != self._master:
            self.stdin = None

    def after_exit(self) -> None:
        """The process is gone: drop stdin and the pty. Pipe pumps run on to EOF, so output a
        background child writes later still lands in the buffers (bounded)."""
        self.close_stdin()
        if self._master is not None:
            for p in self._pumps:
                p.stop()
            with contextlib.suppress(OSError):
                os.close(self._master)
            self._master = self.stdin = None

    def close(self) -> None:
        """Release everything (the sandbox is going away)."""
        self.after_exit()
        for p in self._pumps:
            p.stop()
        for fd, _, _ in self._readers:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._readers = []


async def write_all(fd: int, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
            view = view[n:]
            continue
        except (BlockingIOError, InterruptedError):
            pass
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_writer(fd, _resolve, ready)
        try:
            await asyncio.wait_for(ready, STDIN_WRITE_TIMEOUT_S)
        except TimeoutError:
            raise OSError("the process is not reading its stdin") from None
        finally:
            loop.remove_writer(fd)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)

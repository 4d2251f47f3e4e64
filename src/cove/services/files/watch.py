"""Filesystem events of a sandbox directory, by inotify on the host.

The sandbox's processes and this server share the very same overlay mount, so inotify sees
changes made inside the sandbox too. Watches are added through fds opened inside the root
(/proc/self/fd/N), never by a host path that sandbox code could redirect with a symlink.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

from cove.domain.errors import CoveError, InvalidRequest
from cove.services.files.core import SandboxFiles
from cove.services.files.rooted import normalize
from cove.services.files.tree import Filter, walk

IN_MODIFY, IN_ATTRIB, IN_MOVED_FROM, IN_MOVED_TO = 0x2, 0x4, 0x40, 0x80
IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_MOVE_SELF = 0x100, 0x200, 0x400, 0x800
IN_Q_OVERFLOW, IN_IGNORED, IN_ISDIR, IN_NONBLOCK = 0x4000, 0x8000, 0x40000000, 0o4000
MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)
OPS = [
    (IN_CREATE | IN_MOVED_TO, "CREATE"),
    (IN_MODIFY, "WRITE"),
    (IN_DELETE, "REMOVE"),
    (IN_MOVED_FROM, "RENAME"),
    (IN_ATTRIB, "CHMOD"),
]
HEADER = struct.Struct("iIII")
MAX_WATCHES = 8192
MAX_QUEUED = 10_000
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class Event:
    op: str
    path: str  # the directory holding the entry
    name: str


class Watcher:
    def __init__(self, files: SandboxFiles, path: str, ignore: list[str]) -> None:
        recursive = path.rstrip("/").endswith("/**") or path.strip("/") == "**"
        self.path = normalize(path.rstrip("/").removesuffix("**"))
        self.recursive = recursive
        self._files = files
        self._ignore = [i for i in ignore if i]
        self._dirs: dict[int, str] = {}  # watch descriptor -> directory path
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(MAX_QUEUED)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = _libc.inotify_init1(IN_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise InvalidRequest(f"cannot watch: {os.strerror(ctypes.get_errno())}")

    async def start(self) -> None:
        try:
            await self._files.rooted.run(self._add_tree, self.path)
        except BaseException:
            os.close(self._fd)
            raise
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._on_readable)

    def _add_tree(self, path: str) -> None:
        top = self._files.rooted.open_dir(path)
        try:
            self._add(top, path)
            if self.recursive:
                for node in walk(top, path, Filter()):
                    if node.is_dir and len(self._dirs) < MAX_WATCHES:
                        self._add_child(node.parent_fd, node.name, node.path)
        finally:
            os.close(top)

    def _add_child(self, parent_fd: int, name: str, path: str) -> None:
        with contextlib.suppress(OSError):
            fd = os.open(
                name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd
            )
            try:
                self._add(fd, path)
            finally:
                os.close(fd)

    def _add(self, fd: int, path: str) -> None:
        wd = _libc.inotify_add_watch(self._fd, f"/proc/self/fd/{fd}".encode(), MASK)
        if wd >= 0:
            self._dirs[wd] = path

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return
        last: Event | None = None
        for event in self._parse(data):
            if event is None or event != last:  # one WRITE for a burst of writes
                self._put(event)
            last = event

    def _parse(self, data: bytes) -> list[Event | None]:
        events: list[Event | None] = []
        offset = 0
        while offset + HEADER.size <= len(data):
            wd, mask, _cookie, length = HEADER.unpack_from(data, offset)
            raw = data[offset + HEADER.size : offset + HEADER.size + length]
            offset += HEADER.size + length
            name = raw.split(b"\0", 1)[0].decode("utf-8", errors="surrogateescape")
            directory = self._dirs.get(wd)
            if directory is None:
                continue
            if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
                self._dirs.pop(wd, None) if mask & IN_IGNORED else None
                if directory == self.path:
                    events.append(None)  # the watched directory is gone: end the stream
                continue
            op = next((op for bit, op in OPS if mask & bit), None)
            if op and not self._ignored(directory, name):
                events.append(Event(op, directory, name))
            if self.recursive and mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO) and name:
                events += self._watch_new_dir(f"{directory.rstrip('/')}/{name}")
        return events

    def _ignored(self, directory: str, name: str) -> bool:
        return any(i in f"{directory}/{name}" for i in self._ignore)

    def _watch_new_dir(self, path: str) -> list[Event]:
        """Watch a directory that just appeared, and report what was created in it before the
        watch existed (`mkdir d; echo x > d/f` is faster than the event reaching us).
        Runs on the loop thread: a confined open and one listing per new directory."""
        if len(self._dirs) >= MAX_WATCHES:
            return []
        found: list[Event] = []
        with contextlib.suppress(CoveError, OSError):
            fd = self._files.rooted.open(path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                self._add(fd, path)
                for entry in os.scandir(fd):
                    if not self._ignored(path, entry.name):
                        found.append(Event("CREATE", path, entry.name))
                    if entry.is_dir(follow_symlinks=False):
                        found += self._watch_new_dir(f"{path}/{entry.name}")
            finally:
                os.close(fd)
        return found

    def _put(self, event: Event | None) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a stalled client loses events, not memory
            self._queue.put_nowait(event)

    async def events(self, keepalive_s: float) -> AsyncIterator[Event | None]:
        """Events as they come; None every `keepalive_s` of silence; ends when the directory goes."""
        try:
            while True:
                try:
                    event = await asyncio.wait_for(self._queue.get(), keepalive_s)
                except TimeoutError:
                    yield None
                    continue
                if event is None:
                    return
                yield event
        finally:
            self.close()

    def close(self) -> None:
        """Idempotent; also what the stream's finalizer calls if it never started."""
        if self._fd >= 0:
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

"""Files of a sandbox, read and written from the host through its confined root.

Every blocking call runs in a file worker thread (Rooted.run): a slow disk or a huge file
in one sandbox never stalls the event loop serving the others.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from cove.domain.errors import InvalidRequest
from cove.services.files.rooted import Rooted, normalize, os_error, reopen, write_all

MAX_INLINE_READ = 64 * 1024 * 1024  # JSON reads return content inline up to this size
CHUNK = 1 << 20


@dataclass
class Entry:
    path: str
    name: str
    size: int
    permissions: str
    owner: str
    group: str
    last_modified: str
    is_dir: bool


@dataclass
class Fetched:
    entry: Entry
    children: list[Entry] | None = None  # a directory
    data: bytes | None = None  # a small file
    fd: int | None = None  # a large file, for the caller to stream and close


class SandboxFiles:
    def __init__(self, root: Path) -> None:
        self.rooted = Rooted(root)
        self.uploads: dict[str, object] = {}  # multipart uploads in flight (multipart.py)

    @property
    def root(self) -> Path:
        return self.rooted.root

    # -- metadata ------------------------------------------------------------------------

    async def stat(self, path: str) -> Entry:
        return await self.rooted.run(self._stat, normalize(path))

    def _stat(self, path: str) -> Entry:
        fd = self.rooted.open(path, os.O_PATH)
        try:
            return entry(path, os.fstat(fd))
        finally:
            os.close(fd)

    async def list_dir(self, path: str) -> list[Entry]:
        return await self.rooted.run(self._list_dir, normalize(path))

    def _list_dir(self, path: str) -> list[Entry]:
        fd = self.rooted.open_dir(path)
        try:
            return [entry(str(PurePosixPath(path, n)), st) for n, st in _children(fd)]
        finally:
            os.close(fd)

    # -- read ----------------------------------------------------------------------------

    async def read(self, path: str, limit: int = MAX_INLINE_READ) -> bytes:
        return await self.rooted.run(self._read, normalize(path), limit)

    def _read(self, path: str, limit: int) -> bytes:
        fd, st = self.rooted.open_regular(path)
        try:
            if st.st_size > limit:
                raise InvalidRequest(f"{path} is larger than {limit} bytes; read it raw")
            chunks = []
            total = 0
            while (chunk := os.read(fd, CHUNK)) and total <= limit:
                chunks.append(chunk)
                total += len(chunk)
            return b"".join(chunks)[:limit]
        finally:
            os.close(fd)

    async def fetch(self, path: str, small: int) -> Fetched:
        """What GET /filesystem answers, in one worker-thread hop: a directory's listing, a
        file's bytes when at most `small`, else an open fd to stream from."""
        return await self.rooted.run(self._fetch, normalize(path), small)

    def _fetch(self, path: str, small: int) -> Fetched:
        pfd = self.rooted.open(path, os.O_PATH)
        try:
            st = os.fstat(pfd)
            found = Fetched(entry(path, st))
            if stat.S_ISDIR(st.st_mode):
                found.children = self._list_dir(path)
                return found
            if not stat.S_ISREG(st.st_mode):
                raise InvalidRequest(f"{path} is not a regular file")
            fd = reopen(pfd, os.O_RDONLY)
        finally:
            os.close(pfd)
        if st.st_size > small:
            found.fd = fd
            return found
        try:
            found.data = _read_upto(fd, st.st_size)
        finally:
            os.close(fd)
        return found

    async def open_read(self, path: str) -> tuple[int, int]:
        """(fd, size) of a regular file for streaming; the caller closes the fd."""
        fd, st = await self.rooted.run(self.rooted.open_regular, normalize(path))
        return fd, st.st_size

    # -- write ---------------------------------------------------------------------------

    async def write(self, path: str, data: bytes, mode: int = 0o644) -> str:
        path = normalize(path)
        await self.rooted.run(self._write, path, data, mode)
        return path

    def _write(self, path: str, data: bytes, mode: int) -> None:
        fd = self.rooted.open_for_write(path, mode)
        try:
            write_all(fd, data)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)

    async def mkdir(self, path: str, mode: int = 0o755) -> str:
        path = normalize(path)
        await self.rooted.run(self.rooted.mkdirs, path, mode)
        return path

    async def delete(self, path: str, recursive: bool) -> str:
        path = normalize(path)
        await self.rooted.run(self._delete, path, recursive)
        return path

    def _delete(self, path: str, recursive: bool) -> None:
        dfd, name = self.rooted.parent(path)
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=dfd)
            elif recursive:
                # rmtree with dir_fd walks by fds and never follows a symlink.
                shutil.rmtree(name, dir_fd=dfd)
            else:
                os.rmdir(name, dir_fd=dfd)
        except OSError as exc:
            raise os_error(path, exc) from None
        except RecursionError:
            raise InvalidRequest(f"{path} is nested too deeply to delete in one request") from None
        finally:
            os.close(dfd)


def _read_upto(fd: int, size: int) -> bytes:
    """At most `size` bytes (the stat size: a file growing meanwhile is cut there)."""
    chunks = []
    while size > 0 and (chunk := os.read(fd, min(size, 1 << 30))):
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks) if len(chunks) != 1 else chunks[0]


def _children(fd: int) -> Iterator[tuple[str, os.stat_result]]:
    """(name, lstat) of a directory's entries, sorted; entries vanishing meanwhile skipped."""
    for name in sorted(os.listdir(fd)):
        with contextlib.suppress(FileNotFoundError):
            yield name, os.stat(name, dir_fd=fd, follow_symlinks=False)


def entry(path: str, st: os.stat_result) -> Entry:
    return Entry(
        path=path,
        name=PurePosixPath(path).name or "/",
        size=st.st_size,
        permissions=format(stat.S_IMODE(st.st_mode), "o"),
        owner=_user(st.st_uid),
        group=_group(st.st_gid),
        last_modified=datetime.fromtimestamp(st.st_mtime, UTC).isoformat(),
        is_dir=stat.S_ISDIR(st.st_mode),
    )


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)

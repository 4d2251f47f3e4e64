"""Files of a sandbox, read and written from the host through its confined root."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from cove.domain.errors import Conflict, InvalidRequest, NotFound
from cove.runtime.fsroot import open_in_root

MAX_INLINE_READ = 64 * 1024 * 1024  # JSON reads return content inline up to this size


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


def normalize(path: str) -> str:
    """'//tmp//a/' → '/tmp/a'; relative paths are taken from the sandbox root."""
    clean = "/" + "/".join(p for p in path.split("/") if p and p != ".")
    return str(PurePosixPath(clean))


class SandboxFiles:
    def __init__(self, root: Path) -> None:
        self._root = root

    def _open(self, path: str, flags: int, mode: int = 0o644) -> int:
        root_fd = os.open(self._root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return open_in_root(root_fd, path, flags, mode)
        except FileNotFoundError:
            raise NotFound(f"{path}: no such file or directory") from None
        except NotADirectoryError:
            raise NotFound(f"{path}: a parent is not a directory") from None
        except OSError as exc:
            raise InvalidRequest(f"{path}: {exc.strerror}") from None
        finally:
            os.close(root_fd)

    async def stat(self, path: str) -> Entry:
        return await asyncio.to_thread(self._stat, normalize(path))

    def _stat(self, path: str) -> Entry:
        fd = self._open(path, os.O_PATH)
        try:
            return _entry(path, os.fstat(fd))
        finally:
            os.close(fd)

    async def list_dir(self, path: str) -> list[Entry]:
        return await asyncio.to_thread(self._list_dir, normalize(path))

    def _list_dir(self, path: str) -> list[Entry]:
        fd = self._open(path, os.O_RDONLY | os.O_DIRECTORY)
        entries = []
        try:
            for name in sorted(os.listdir(fd)):
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    entries.append(_entry(str(PurePosixPath(path, name)), st))
        finally:
            os.close(fd)
        return entries

    async def read(self, path: str, limit: int = MAX_INLINE_READ) -> bytes:
        return await asyncio.to_thread(self._read, normalize(path), limit)

    def _read(self, path: str, limit: int) -> bytes:
        fd = self._open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise InvalidRequest(f"{path} is a directory")
            if not stat.S_ISREG(st.st_mode):
                raise InvalidRequest(f"{path} is not a regular file")
            if st.st_size > limit:
                raise InvalidRequest(f"{path} is larger than {limit} bytes")
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    async def write(self, path: str, data: bytes, mode: int = 0o644) -> str:
        return await asyncio.to_thread(self._write, normalize(path), data, mode)

    def _write(self, path: str, data: bytes, mode: int) -> str:
        if path == "/":
            raise InvalidRequest("cannot write to /")
        self._mkdirs(str(PurePosixPath(path).parent))
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        try:
            fd = self._open(path, flags, mode)
        except InvalidRequest as exc:
            if "Is a directory" in exc.message:
                raise Conflict(f"{path} is a directory") from None
            raise
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        return path

    async def mkdir(self, path: str, mode: int = 0o755) -> str:
        path = normalize(path)
        await asyncio.to_thread(self._mkdirs, path, mode)
        return path

    def _mkdirs(self, path: str, mode: int = 0o755) -> None:
        """mkdir -p, one confined step at a time (a symlinked parent stays inside root)."""
        current = "/"
        for part in PurePosixPath(path).parts[1:]:
            parent = self._open(current, os.O_PATH | os.O_DIRECTORY)
            try:
                os.mkdir(part, mode, dir_fd=parent)
            except FileExistsError:
                pass
            finally:
                os.close(parent)
            current = str(PurePosixPath(current, part))
        os.close(self._open(current, os.O_PATH | os.O_DIRECTORY))  # must be a directory


def _entry(path: str, st: os.stat_result) -> Entry:
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

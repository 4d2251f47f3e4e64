"""Confined primitives over one sandbox root: every path is resolved by the kernel inside it.

Only regular files are ever opened for I/O. Sandbox code may plant FIFOs (an open would
block) or device nodes (the host opening them would reach host devices, outside the
sandbox's device cgroup), so files are first opened O_PATH, checked, then reopened through
their /proc/self/fd magic link — the same inode, no second path lookup to race.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import secrets
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from cove.domain.errors import Conflict, CoveError, InvalidRequest, NotFound
from cove.runtime.fsroot import open_in_root

SLOTS_PER_SANDBOX = 8
_POOL = ThreadPoolExecutor(max_workers=64, thread_name_prefix="cove-files")
T = TypeVar("T")


class NoSpace(CoveError):
    status, code = 507, "NO_SPACE"


class FileExists(Conflict):
    code = "FILE_ALREADY_EXISTS"


def normalize(path: str) -> str:
    """'//tmp//a/./b/../c/' → '/tmp/a/c'; `..` is clamped at the root like the kernel does."""
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    if "\0" in path:
        raise InvalidRequest("paths cannot contain NUL bytes")
    return "/" + "/".join(parts)


def split(path: str) -> tuple[str, str]:
    """('/a/b', 'c') for '/a/b/c'; the name is one component, never '' '.' or '..'."""
    if path == "/":
        raise InvalidRequest("this operation needs a path below /")
    p = PurePosixPath(path)
    return str(p.parent), p.name


def os_error(path: str, exc: OSError) -> CoveError:
    """The sandbox API's reading of an errno."""
    code = exc.errno
    if code in (errno.ENOENT, errno.ENOTDIR):
        return NotFound(f"{path}: no such file or directory")
    if code == errno.EEXIST:
        return FileExists(f"{path} already exists")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(f"{path}: no space left in the sandbox")
    if code == errno.EISDIR:
        return Conflict(f"{path} is a directory")
    if code == errno.ENOTEMPTY:
        return Conflict(f"{path} is a directory that is not empty (use recursive=true)")
    if code == errno.ELOOP:
        return InvalidRequest(f"{path}: too many levels of symbolic links")
    return InvalidRequest(f"{path}: {exc.strerror}")


class Rooted:
    """Paths here are normalized absolute sandbox paths (see normalize)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._slots = asyncio.Semaphore(SLOTS_PER_SANDBOX)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in the file worker pool. Blocking file work never runs on the event loop,
        and one sandbox holds at most SLOTS_PER_SANDBOX workers: a huge copy or tree read in
        one sandbox cannot starve the others' file calls."""
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(
                _POOL, functools.partial(fn, *args)
            )

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        root_fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return open_in_root(root_fd, path, flags, mode)
        except OSError as exc:
            raise os_error(path, exc) from None
        finally:
            os.close(root_fd)

    def open_dir(self, path: str) -> int:
        return self.open(path, os.O_RDONLY | os.O_DIRECTORY)

    def open_regular(self, path: str, flags: int = os.O_RDONLY) -> tuple[int, os.stat_result]:
        """(fd, stat) of a regular file, following in-root symlinks; 400 for anything else."""
        pfd = self.open(path, os.O_PATH)
        try:
            st = os.fstat(pfd)
            if stat.S_ISDIR(st.st_mode):
                raise Conflict(f"{path} is a directory")
            if not stat.S_ISREG(st.st_mode):
                raise InvalidRequest(f"{path} is not a regular file")
            return reopen(pfd, flags), st
        finally:
            os.close(pfd)

    def parent(self, path: str, create: bool = False) -> tuple[int, str]:
        """(O_PATH fd of the parent directory, final name); the caller closes the fd."""
        parent, name = split(path)
        if create:
            self.mkdirs(parent)
        return self.open(parent, os.O_PATH | os.O_DIRECTORY), name

    def mkdirs(self, path: str, mode: int = 0o755) -> None:
        """mkdir -p, one confined step at a time (a symlinked parent stays inside root)."""
        try:
            os.close(self.open(path, os.O_PATH | os.O_DIRECTORY))
            return  # the common case: it exists already
        except NotFound:
            pass
        current = "/"
        for part in PurePosixPath(path).parts[1:]:
            fd = self.open(current, os.O_PATH | os.O_DIRECTORY)
            try:
                os.mkdir(part, mode, dir_fd=fd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise os_error(str(PurePosixPath(current, part)), exc) from None
            finally:
                os.close(fd)
            current = str(PurePosixPath(current, part))
        os.close(self.open(current, os.O_PATH | os.O_DIRECTORY))  # must be a directory

    def create_temp(self, path: str) -> tuple[int, int, str]:
        """(dir fd, write fd, temp name) of a new file beside `path`, to rename over it later."""
        dfd, name = self.parent(path, create=True)
        temp = f".{name[:200]}.cove-{secrets.token_hex(4)}"
        try:
            fd = os.open(
                temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dfd
            )
        except OSError as exc:
            os.close(dfd)
            raise os_error(path, exc) from None
        return dfd, fd, temp

    def open_for_write(self, path: str, mode: int, exclusive: bool = False) -> int:
        """Write fd of `path`, truncated; created (as a regular file) when missing."""
        for _ in range(8):  # a racing create/unlink by sandbox code: look again
            try:
                fd, _st = self.open_regular(path, os.O_WRONLY)
            except NotFound:
                dfd, name = self.parent(path, create=True)
                try:
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                    return os.open(name, flags, mode, dir_fd=dfd)
                except FileExistsError:
                    continue  # appeared meanwhile, or a dangling symlink
                except OSError as exc:
                    raise os_error(path, exc) from None
                finally:
                    os.close(dfd)
            if exclusive:
                os.close(fd)
                raise FileExists(f"{path} already exists")
            os.ftruncate(fd, 0)
            return fd
        raise InvalidRequest(f"{path} is a dangling symbolic link or keeps changing")


def reopen(pfd: int, flags: int) -> int:
    """Open the very inode an O_PATH fd refers to (no path lookup)."""
    try:
        return os.open(f"/proc/self/fd/{pfd}", flags | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise os_error("file", exc) from None


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except OSError as exc:
            raise os_error("file", exc) from None


def copy_fd(src: int, dst: int) -> int:
    """Copy the rest of src into dst (in-kernel where the filesystems allow); bytes copied."""
    total = 0
    try:
        while n := os.copy_file_range(src, dst, 1 << 30):
            total += n
        return total
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise os_error("file", exc) from None
        if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    while chunk := os.read(src, 1 << 20):
        write_all(dst, chunk)
        total += len(chunk)
    return total

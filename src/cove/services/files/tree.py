"""Whole trees: a confined walk, read_tree / write_tree, copy and tar.gz export.

The walk descends by directory fds opened O_NOFOLLOW relative to their parent, with names
straight from getdents (never '..', never containing '/'): a directory swapped for a symlink
mid-walk fails to open instead of leading out of the root.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from cove.domain.errors import CoveError, InvalidRequest
from cove.services.files.core import Entry, SandboxFiles, entry
from cove.services.files.rooted import Rooted, copy_fd, normalize, os_error, reopen, write_all

MAX_DEPTH = 128
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class TooLarge(CoveError):
    status, code = 422, "TOO_LARGE"


@dataclass
class Filter:
    patterns: list[str] = field(default_factory=list)  # globs on names of files
    exclude_dirs: set[str] = field(default_factory=set)  # directory names not descended into
    exclude_hidden: bool = False

    def descend(self, name: str) -> bool:
        return name not in self.exclude_dirs and not (self.exclude_hidden and name[0] == ".")

    def keep(self, name: str) -> bool:
        if self.exclude_hidden and name[0] == ".":
            return False
        return not self.patterns or any(fnmatch.fnmatchcase(name, p) for p in self.patterns)


@dataclass
class Node:
    path: str  # absolute sandbox path
    name: str
    st: os.stat_result
    parent_fd: int  # valid only while the walk is at this node

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)


def walk(dir_fd: int, path: str, flt: Filter, depth: int = 0) -> Iterator[Node]:
    """Every entry below the open directory `dir_fd` (pre-order); skips what vanishes."""
    with os.scandir(dir_fd) as it:
        names = sorted(e.name for e in it)
    for name in names:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            continue
        node = Node(str(PurePosixPath(path, name)), name, st, dir_fd)
        yield node
        if node.is_dir and depth < MAX_DEPTH and flt.descend(name):
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
            except OSError:
                continue  # swapped or removed meanwhile
            try:
                yield from walk(child, node.path, flt, depth + 1)
            finally:
                os.close(child)


def open_child_regular(node: Node) -> int | None:
    """Read fd of a walked regular file, re-checked after open (it may have been swapped)."""
    try:
        pfd = os.open(node.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=node.parent_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(pfd).st_mode):
            return None
        return reopen(pfd, os.O_RDONLY)
    except CoveError:
        return None
    finally:
        os.close(pfd)


# -- read_tree / write_tree ------------------------------------------------------------------


def read_tree(
    files: SandboxFiles, path: str, flt: Filter, content: bool, max_files: int, max_bytes: int
) -> tuple[Entry, list[tuple[Entry, str | None]], list[Entry]]:
    """(the directory, [(file, content)], [subdirectories]) below `path`; 422 past the limits."""
    top = files.rooted.open_dir(path)
    try:
        root_entry = entry(path, os.fstat(top))
        found: list[tuple[Entry, str | None]] = []
        dirs: list[Entry] = []
        total = 0
        for node in walk(top, path, flt):
            if node.is_dir:
                dirs.append(entry(node.path, node.st))
                continue
            if not flt.keep(node.name):
                continue
            if len(found) >= max_files:
                raise TooLarge(f"more than {max_files} files under {path} (maxFiles)")
            text = _text_of(files.rooted, node, max_bytes - total) if content else None
            total += len(text.encode()) if text else 0
            found.append((entry(node.path, node.st), text))
        return root_entry, found, dirs
    finally:
        os.close(top)


def _text_of(rooted: Rooted, node: Node, budget: int) -> str | None:
    """Content of a regular file or of a symlink to one (resolved inside the root); 422 when
    it would take the tree past its byte budget — checked before reading, not after."""
    if stat.S_ISLNK(node.st.st_mode):
        try:
            fd, _st = rooted.open_regular(node.path)
        except CoveError:
            return None
    elif stat.S_ISREG(node.st.st_mode):
        fd = open_child_regular(node)
        if fd is None:
            return None
    else:
        return None
    try:
        data = b""
        while len(data) <= budget and (more := os.read(fd, budget + 1 - len(data))):
            data += more
        if len(data) > budget:
            raise TooLarge(f"the files hold more than maxBytes ({node.path} is past it)")
        return data.decode("utf-8", errors="replace")
    finally:
        os.close(fd)


def write_tree(files: SandboxFiles, dest: str, tree: dict[str, str]) -> None:
    for rel in tree:
        if not isinstance(rel, str) or not rel or ".." in rel.split("/") or "\0" in rel:
            raise InvalidRequest(f"tree path {rel!r} must be relative, without '..'")
    for rel, text in tree.items():
        if not isinstance(text, str):
            raise InvalidRequest(f"content of {rel!r} must be a string")
        fd = files.rooted.open_for_write(normalize(f"{dest}/{rel}"), 0o644)
        try:
            write_all(fd, text.encode())
        finally:
            os.close(fd)


# -- copy ------------------------------------------------------------------------------------


def copy(rooted: Rooted, source: str, dest: str, no_overwrite: bool) -> None:
    if dest == source or dest.startswith(source.rstrip("/") + "/"):
        raise InvalidRequest(f"cannot copy {source} into itself ({dest})")
    sfd, sname = rooted.parent(source)
    dfd, dname = rooted.parent(dest, create=True)
    try:
        _copy_entry(sfd, sname, dfd, dname, no_overwrite, 0)
    except OSError as exc:
        raise os_error(dest if exc.errno == 17 else source, exc) from None
    finally:
        os.close(sfd)
        os.close(dfd)


def _copy_entry(sfd: int, sname: str, dfd: int, dname: str, excl: bool, depth: int) -> None:
    st = os.stat(sname, dir_fd=sfd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        _copy_dir(sfd, sname, dfd, dname, excl, depth, stat.S_IMODE(st.st_mode))
    elif stat.S_ISLNK(st.st_mode):
        target = os.readlink(sname, dir_fd=sfd)
        if not excl:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dname, dir_fd=dfd)
        os.symlink(target, dname, dir_fd=dfd)  # followed later only through the confined root
    elif stat.S_ISREG(st.st_mode):
        _copy_file(sfd, sname, dfd, dname, excl, stat.S_IMODE(st.st_mode))
    # FIFOs, sockets and devices are not copied: opening them could block or reach the host


def _copy_dir(
    sfd: int, sname: str, dfd: int, dname: str, excl: bool, depth: int, mode: int
) -> None:
    if depth > MAX_DEPTH:
        raise InvalidRequest("directory tree too deep to copy")
    try:
        os.mkdir(dname, mode | 0o700, dir_fd=dfd)
    except FileExistsError:
        if excl:
            raise
    src = os.open(sname, DIR_FLAGS, dir_fd=sfd)
    try:
        dst = os.open(dname, DIR_FLAGS, dir_fd=dfd)
        try:
            for name in sorted(os.listdir(src)):
                _copy_entry(src, name, dst, name, excl, depth + 1)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _copy_file(sfd: int, sname: str, dfd: int, dname: str, excl: bool, mode: int) -> None:
    pfd = os.open(sname, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd)
    try:
        if not stat.S_ISREG(os.fstat(pfd).st_mode):
            return  # swapped for something else meanwhile
        src = reopen(pfd, os.O_RDONLY)
    finally:
        os.close(pfd)
    try:
        if not excl:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(dname, dir_fd=dfd)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        dst = os.open(dname, flags, mode, dir_fd=dfd)
        try:
            copy_fd(src, dst)
        finally:
            os.close(dst)
    finally:
        os.close(src)

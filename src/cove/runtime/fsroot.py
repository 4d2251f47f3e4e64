"""Open paths inside a sandbox root without ever leaving it (Linux openat2 RESOLVE_IN_ROOT).

The kernel resolves `..`, absolute symlinks and symlink chains as if the root were `/`, so a
path or a link planted by sandbox code cannot reach the host; magic links (/proc/*/fd) are
refused. Every file operation of the sandbox API goes through here.

Host tools (ripgrep, find) walk a tree by path, so a directory swapped for a symlink between
their readdir and their open would lead them out. They get a `confined_view` instead: a
detached, read-only clone of the start directory's mount on which the kernel refuses to follow
any symlink (MOUNT_ATTR_NOSYMFOLLOW) and whose root is its own `..`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

_SYS_OPENAT2 = 437  # x86_64 and aarch64 share these numbers
_SYS_OPEN_TREE = 428
_SYS_MOUNT_SETATTR = 442
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
_OPEN_TREE_CLONE = 1
_AT_EMPTY_PATH = 0x1000
_MOUNT_ATTR_LOCKDOWN = 0x1 | 0x2 | 0x4 | 0x8 | 0x200000  # RDONLY NOSUID NODEV NOEXEC NOSYMFOLLOW
_libc = ctypes.CDLL(None, use_errno=True)


def open_in_root(root_fd: int, path: str, flags: int, mode: int = 0o644) -> int:
    """fd for `path` (absolute or relative, interpreted inside root); raises OSError."""
    if not flags & os.O_CREAT:
        mode = 0  # openat2 rejects a mode without O_CREAT
    how = struct.pack("QQQ", flags | os.O_CLOEXEC, mode, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    rel = path.lstrip("/") or "."
    while True:
        fd = _libc.syscall(_SYS_OPENAT2, root_fd, rel.encode(), how, len(how))
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err != errno.EAGAIN:  # EAGAIN: a concurrent rename raced the lookup; retry
            raise OSError(err, os.strerror(err), path)


def confined_view(dir_fd: int) -> int:
    """fd of a detached read-only, nosymfollow mount of the directory `dir_fd` refers to.

    A child process whose cwd is this fd can walk the tree below it but cannot follow a
    symlink (ELOOP) nor climb above it; the mount disappears with the last reference.
    """
    fd = _libc.syscall(
        _SYS_OPEN_TREE, dir_fd, b"", _OPEN_TREE_CLONE | _AT_EMPTY_PATH | os.O_CLOEXEC
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), "open_tree")
    attr = struct.pack("QQQQ", _MOUNT_ATTR_LOCKDOWN, 0, 0, 0)
    if _libc.syscall(_SYS_MOUNT_SETATTR, fd, b"", _AT_EMPTY_PATH, attr, len(attr)) < 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, os.strerror(err), "mount_setattr")
    return fd

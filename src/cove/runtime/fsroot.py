"""Open paths inside a sandbox root without ever leaving it (Linux openat2 RESOLVE_IN_ROOT).

The kernel resolves `..`, absolute symlinks and symlink chains as if the root were `/`, so a
path or a link planted by sandbox code cannot reach the host; magic links (/proc/*/fd) are
refused. Every file operation of the sandbox API goes through here.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

_SYS_OPENAT2 = 437  # x86_64 and aarch64
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
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

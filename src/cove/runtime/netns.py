"""Host-side reach into a live sandbox: sockets in its network namespace, its listening ports,
and ptys from its own devpts instance. All of it goes through /proc/<init_pid>, so nothing runs
inside the sandbox and nothing in the sandbox can make the host follow a path of its choosing.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import socket
import stat
import termios

from cove.runtime.base import PortInfo

CLONE_NEWNET = 0x40000000
TIOCGPTPEER = 0x5441  # linux >= 4.13: open the slave without a path lookup
TIOCSPTLCK = 0x40045431
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def socket_in_netns(
    init_pid: int, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
) -> socket.socket:
    """A socket (TCP unless kind says otherwise) that lives in init_pid's network namespace.
    Blocking call: run it in a worker thread. setns only moves the calling thread, and the
    thread moves back before it returns; a socket keeps the namespace it was created in for its
    whole life (bind/listen/connect may happen later, from any thread)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/proc/{init_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
            try:
                return socket.socket(family, kind | socket.SOCK_CLOEXEC)
            finally:
                try:
                    _setns(home)
                except OSError:  # a worker thread stuck in a sandbox's netns: never reuse it
                    os._exit(70)
        finally:
            os.close(target)
    finally:
        os.close(home)


def _socket_inodes(pid_dir: str) -> set[int]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"{pid_dir}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"{pid_dir}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(int(link[8:-1]))
    return inodes


def _ns_session(pid_dir: str) -> int | None:
    """The task's session id as seen inside its innermost pid namespace."""
    try:
        with open(f"{pid_dir}/status") as f:
            for line in f:
                if line.startswith("NSsid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return None


def listening(init_pid: int) -> list[PortInfo]:
    """Every listening TCP socket of the sandbox's network namespace."""
    found = []
    for family in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{init_pid}/net/{family}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) < 10 or cols[3] != _LISTEN:
                continue
            addr_hex, port_hex = cols[1].rsplit(":", 1)
            found.append(PortInfo(int(port_hex, 16), _address(addr_hex), family, int(cols[9])))
    return found


def _address(hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def session_ports(init_pid: int, host_pids: list[int], session: int) -> list[PortInfo]:
    """Listening sockets held by any task of the session `session` (the spawned process and
    every child it did not move to a new session, e.g. `sh -c 'server &'`)."""
    inodes: set[int] = set()
    for hp in host_pids:
        pid_dir = f"/proc/{hp}"
        if _ns_session(pid_dir) == session:
            inodes |= _socket_inodes(pid_dir)
    return [p for p in listening(init_pid) if p.inode in inodes]


def open_pty(init_pid: int) -> tuple[int, int]:
    """(master, slave) from the sandbox's own devpts, so the slave's name resolves inside the
    sandbox (tty, ps). Falls back to a host pty when that instance is unusable."""
    try:
        master = os.open(
            f"/proc/{init_pid}/root/dev/pts/ptmx",
            os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC | os.O_NOFOLLOW,
        )
    except OSError:
        return _host_pty()
    try:
        st = os.fstat(master)
        if not stat.S_ISCHR(st.st_mode) or os.major(st.st_rdev) != 5:
            raise OSError(errno.ENODEV, "not a ptmx")
        fcntl.ioctl(master, TIOCSPTLCK, b"\0\0\0\0")
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        return master, slave
    except OSError:
        os.close(master)
        return _host_pty()


def _host_pty() -> tuple[int, int]:
    master, slave = os.openpty()
    os.set_inheritable(master, False)
    os.set_inheritable(slave, False)
    return master, slave


def set_winsize(master: int, cols: int, rows: int) -> None:
    import struct

    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

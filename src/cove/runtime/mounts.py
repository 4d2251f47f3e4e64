"""mount(2)/umount2(2) through ctypes: the `mount` CLI costs ~6 ms, the syscall ~0.3 ms."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MNT_DETACH = 2


def mount(source: str, target: Path, fstype: str, flags: int = 0, data: str = "") -> None:
    if (
        _libc.mount(
            source.encode(),
            str(target).encode(),
            fstype.encode(),
            flags,
            data.encode() if data else None,
        )
        != 0
    ):
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype} {source} on {target}: {os.strerror(err)}")


def umount(target: Path) -> None:
    """Unmount; falls back to a lazy detach if busy. Not mounted / missing is fine."""
    path = str(target).encode()
    if _libc.umount2(path, 0) == 0:
        return
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):  # not a mount point (any more)
        return
    if _libc.umount2(path, MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, f"umount {target}: {os.strerror(err)}")


def is_mounted(target: Path) -> bool:
    needle = f" {os.path.realpath(target)} "
    with open("/proc/self/mounts") as f:
        return any(needle in line for line in f)


def mount_image(image: Path, target: Path) -> None:
    """Mount an EROFS image file read-only, file-backed (no loop device); idempotent."""
    target.mkdir(parents=True, exist_ok=True)
    if not is_mounted(target):
        mount(str(image), target, "erofs", MS_RDONLY | MS_NODEV)


def mount_rootfs(sandbox_dir: Path, lower: Path, disk_mb: int) -> Path:
    """tmpfs (size-capped) at <dir>/upper holding overlay upper+work; overlay at <dir>/rootfs."""
    upper, rootfs = sandbox_dir / "upper", sandbox_dir / "rootfs"
    upper.mkdir(exist_ok=True)
    rootfs.mkdir(exist_ok=True)
    mount("tmpfs", upper, "tmpfs", MS_NODEV, f"size={int(disk_mb)}m,mode=0755")
    try:
        (upper / "u").mkdir()
        (upper / "w").mkdir()
        mount(
            "overlay",
            rootfs,
            "overlay",
            MS_NODEV,  # defence in depth: sandboxes cannot mknod, and no node would work
            f"lowerdir={lower},upperdir={upper / 'u'},workdir={upper / 'w'}",
        )
    except BaseException:
        umount(upper)
        raise
    return rootfs


def unmount_rootfs(sandbox_dir: Path) -> None:
    umount(sandbox_dir / "rootfs")
    umount(sandbox_dir / "upper")

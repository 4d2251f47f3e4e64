"""Fast host checks before serving: say exactly what is missing instead of failing later."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def preflight() -> str | None:
    """None when this host can run sandboxes, else a sentence naming what is missing."""
    if os.geteuid() != 0:
        return "cove serve needs root (it creates namespaces, cgroups and mounts); run it as root"
    filesystems = Path("/proc/filesystems").read_text()
    for fs in ("overlay", "erofs", "tmpfs"):
        if fs not in filesystems:
            return f"the kernel lacks the {fs} filesystem (load the module: modprobe {fs})"
    for ns in ("pid", "net", "mnt", "ipc", "uts"):
        if not Path(f"/proc/self/ns/{ns}").exists():
            return f"the kernel lacks {ns} namespaces"
    if not Path("/proc/self/status").read_text().count("Seccomp:"):
        return "the kernel lacks seccomp"
    for controller in ("memory", "pids", "cpu"):
        if not _has_cgroup(controller):
            return f"the cgroup controller {controller!r} is not mounted"
    for tool in ("crun",):  # image tools are checked when an image must be built
        if shutil.which(tool) is None:
            return f"{tool} is not installed (run the README's set-up command)"
    return None


def _has_cgroup(controller: str) -> bool:
    v1 = Path("/sys/fs/cgroup") / controller
    if v1.is_dir() and (v1 / "cgroup.procs").exists():
        return True
    for unified in (
        Path("/sys/fs/cgroup/cgroup.controllers"),
        Path("/sys/fs/cgroup/unified/cgroup.controllers"),
    ):
        if unified.exists() and controller in unified.read_text().split():
            return True
    return False

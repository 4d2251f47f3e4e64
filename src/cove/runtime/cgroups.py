"""cgroup v1 (hybrid) handling for crun sandboxes at /cove/<instance>/<id> in every hierarchy.

Each server instance (one data dir) owns its own parent group, so orphan cleanup in one server
never touches another server's sandboxes on the same host."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from cove.runtime.base import Limits
from cove.runtime.mounts import mount

ROOT = Path("/sys/fs/cgroup")
TOP = "cove"


def parent_for(data_dir: Path) -> str:
    """The cgroup parent of one server instance, stable across restarts of that data dir."""
    return f"{TOP}/{hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]}"


def ensure_hugetlb_v1() -> None:
    """crun 1.8.1 refuses hybrid mode while cgroup2 has a controller ("drop all controllers from
    cgroupv2"); on this host that is hugetlb. Mounting hugetlb as a v1 hierarchy moves it off
    cgroup2. It must be mounted at .../hugetlb (runc insists on the name too)."""
    unified = ROOT / "unified" / "cgroup.controllers"
    if not unified.exists() or not unified.read_text().split():
        return
    target = ROOT / "hugetlb"
    if (target / "tasks").exists():
        return
    target.mkdir(exist_ok=True)
    mount("cgroup", target, "cgroup", 0, "hugetlb")


def hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy directory (v1 controllers, name=systemd, unified)."""
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if parts[2] in ("cgroup", "cgroup2") and parts[1].startswith(str(ROOT) + "/"):
                out.append(Path(parts[1]))
    return out


def missing_controllers() -> list[str]:
    return [c for c in ("memory", "pids", "cpu") if not (ROOT / c / "tasks").exists()]


def _write(path: Path, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except FileNotFoundError:
        pass


def apply_limits(parent: str, sandbox_id: str, limits: Limits, current_mb: int) -> None:
    """Rewrite the limits of a running sandbox (pool claim; on the create hot path, so plain
    string paths and raw writes). memsw must stay >= memory.limit: raise it first when
    growing, last when shrinking."""
    mem = f"{ROOT}/memory/{parent}/{sandbox_id}/"
    limit = str(limits.memory_mb * 2**20)
    order = [mem + "memory.limit_in_bytes"]
    if os.path.exists(mem + "memory.memsw.limit_in_bytes"):
        memsw = mem + "memory.memsw.limit_in_bytes"
        order = [memsw, *order] if limits.memory_mb > current_mb else [*order, memsw]
    for path in order:
        _write_fast(path, limit)
    _write_fast(f"{ROOT}/pids/{parent}/{sandbox_id}/pids.max", str(limits.pids))
    _write_fast(f"{ROOT}/cpu/{parent}/{sandbox_id}/cpu.shares", str(limits.cpu_weight))


def _write_fast(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def procs(parent: str, sandbox_id: str) -> list[int]:
    try:
        return [
            int(p)
            for p in (ROOT / "pids" / parent / sandbox_id / "cgroup.procs").read_text().split()
        ]
    except OSError:
        return []


def kill_all(parent: str, sandbox_id: str, timeout: float = 2.0) -> None:
    """SIGKILL every task in the sandbox's pids cgroup and wait (briefly) until it is empty."""
    deadline = time.monotonic() + timeout
    while pids := procs(parent, sandbox_id):
        for pid in pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            return
        time.sleep(0.0005)


def remove(parent: str, sandbox_id: str, timeout: float = 2.0) -> list[str]:
    """rmdir <parent>/<id> everywhere; retries briefly while killed tasks finish exiting.
    Returns the paths that could not be removed."""
    deadline = time.monotonic() + timeout
    left = [h / parent / sandbox_id for h in hierarchies()]
    while True:
        still = []
        for path in left:
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError:
                still.append(path)
        if not still or time.monotonic() > deadline:
            return [str(p) for p in still]
        left = still
        time.sleep(0.005)


def list_ids(parent: str) -> set[str]:
    """Sandbox ids with a cgroup in any hierarchy (for orphan cleanup)."""
    ids: set[str] = set()
    for h in hierarchies():
        try:
            ids.update(e.name for e in os.scandir(h / parent) if e.is_dir())
        except OSError:
            pass
    return ids


def remove_parent(parent: str) -> None:
    """rmdir the instance's parent group everywhere once it holds no sandbox."""
    for h in hierarchies():
        try:
            os.rmdir(h / parent)
        except OSError:
            pass

"""Thin blocking wrappers around the crun CLI (call them via asyncio.to_thread).

crun is started with os.posix_spawn (no fork of the Python process, no asyncio child watcher):
the listening control socket goes to fd 3 via a DUP2 file action (source fd != 3, or the
dup2-onto-itself would keep CLOEXEC), and `--preserve-fds 1` hands it to the zygote.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from cove.runtime.base import RuntimeError_


def binary() -> str | None:
    return shutil.which("crun")


def run_detached(root: Path, bundle: Path, sandbox_id: str, listen_fd: int) -> int:
    """`crun run -d` with listen_fd as the container's fd 3. Returns the init's host pid."""
    crun = binary() or "crun"
    log = bundle / "crun.log"
    pid_file = bundle / "init.pid"
    src = listen_fd
    if listen_fd == 3:  # dup2(3, 3) would be a no-op that leaves CLOEXEC set
        src = os.dup(listen_fd)
    null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        pid = os.posix_spawn(
            crun,
            [
                crun,
                "--root",
                str(root),
                "run",
                "-d",
                "--preserve-fds",
                "1",
                "--pid-file",
                str(pid_file),
                "--bundle",
                str(bundle),
                sandbox_id,
            ],
            {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
            file_actions=[
                (os.POSIX_SPAWN_DUP2, null, 0),
                (os.POSIX_SPAWN_DUP2, out, 1),
                (os.POSIX_SPAWN_DUP2, out, 2),
                (os.POSIX_SPAWN_DUP2, src, 3),
            ],
        )
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(null)
        os.close(out)
        if src != listen_fd:
            os.close(src)
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        detail = log.read_text(errors="replace").strip()[-1500:]
        raise RuntimeError_(f"crun run failed (rc={rc}): {detail}")
    return int(pid_file.read_text().strip())


def _quiet(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary() or "crun", "--root", str(root), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def state(root: Path, sandbox_id: str) -> dict | None:
    proc = _quiet(root, "state", sandbox_id)
    if proc.returncode != 0:
        return None
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return None


def delete(root: Path, sandbox_id: str) -> None:
    """SIGKILL everything and forget the container; missing containers are fine."""
    if (root / sandbox_id).exists():
        _quiet(root, "delete", "-f", sandbox_id)


def list_ids(root: Path) -> set[str]:
    """Container ids known under this crun root (crun keeps one directory per container)."""
    try:
        return {e.name for e in os.scandir(root) if e.is_dir()}
    except FileNotFoundError:
        return set()

"""Start a real `cove serve` for tests and benchmarks, and check it left nothing behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
COVE = ROOT / ".venv" / "bin" / "cove"
# The base image is a cache shared by every test server (built once by scripts/install).
IMAGES_DIR = os.environ.get("COVE_IMAGES_DIR", "/var/lib/cove/images")
KEYS = {"ws-a": "key-a", "ws-b": "key-b"}
BASE = Path(os.environ.get("COVE_TEST_DIR", "/var/tmp/cove-tests"))


def new_data_dir() -> Path:
    path = BASE / uuid.uuid4().hex[:8]
    path.mkdir(parents=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CoveServer:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.exit_code: int | None = None  # set by served()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "COVE_DATA_DIR": str(data_dir),
            "COVE_IMAGES_DIR": IMAGES_DIR,
            "COVE_API_KEYS": ",".join(f"{k}:{w}" for w, k in KEYS.items()),
            "COVE_POOL_SIZE": "2",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 600) -> CoveServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [str(COVE), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cove exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"cove did not become healthy:\n{self.log()}")

    def log(self) -> str:
        path = self.data_dir / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def client(self, workspace: str = "ws-a") -> httpx.Client:
        headers = {"Authorization": f"Bearer {KEYS[workspace]}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def eventually(check: Callable[[], bool], timeout_s: float = 30) -> bool:
    """Polls `check` every 0.1 s until it holds or `timeout_s` passed (bounded): for state cove
    writes after answering (the single writer's next commit, buffered metering)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@contextlib.contextmanager
def served(**env: str) -> Iterator[CoveServer]:
    """A server (COVE_* env) in a fresh data dir, stopped on the way out. The dir is removed only
    when the server stopped cleanly and left nothing: otherwise mounts may still live in it."""
    srv = CoveServer(new_data_dir(), **env).start()
    try:
        yield srv
    finally:
        srv.exit_code = srv.stop()
    if srv.exit_code == 0 and not leftovers(srv.data_dir):
        shutil.rmtree(srv.data_dir, ignore_errors=True)


def leftovers(data_dir: Path) -> list[str]:
    """Mounts, cgroups and processes a stopped server left behind."""
    from cove.runtime.cgroups import parent_for

    found = [
        line for line in Path("/proc/mounts").read_text().splitlines() if str(data_dir) in line
    ]
    parent = parent_for(data_dir)
    found += [str(cg) for cg in Path("/sys/fs/cgroup").glob(f"*/{parent}")]
    for proc in Path("/proc").iterdir():  # a sandbox's root reads as "/" from here: ask cgroups
        if proc.name.isdigit():
            try:
                groups = (proc / "cgroup").read_text()
                zombie = "\nState:\tZ" in (proc / "status").read_text()
            except OSError:
                continue
            # A killed sandbox init is re-parented to the host's init, which reaps it a moment
            # later: a zombie holds nothing but its pid entry.
            if f"/{parent}/" in groups and not zombie:
                found.append(f"pid {proc.name} in {parent}")
    return found


if __name__ == "__main__":  # manual use: python tests/server.py DIR
    server = CoveServer(Path(sys.argv[1])).start()
    print(server.url)

"""The runtime seam: what every isolation backend provides.

A backend creates and destroys sandboxes and spawns processes inside them. Process semantics
(names, logs, waits, restarts) live above this layer in services/, so every backend behaves
alike; a backend only spawns argv/env/cwd with three given fds and reports the exit.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class RuntimeError_(Exception):
    """A backend failure the caller can show to a user (reason is safe to expose)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownImage(RuntimeError_):
    """The requested image name maps to no local image."""


class SandboxGone(RuntimeError_):
    """The sandbox's init (zygote) is no longer reachable."""


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    pids: int = 512
    cpu_weight: int = 1024  # cgroup v1 cpu.shares
    disk_mb: int = 4096  # size cap of the tmpfs upper layer


@dataclass(frozen=True)
class SandboxConfig:
    sandbox_id: str  # stable id, also names the cgroups and the state directory
    image: str  # public image name, e.g. "blaxel/base-image:latest"
    limits: Limits
    hostname: str = "sandbox"


@dataclass
class Exited:
    """How a spawned process ended: exit code, or the signal that killed it."""

    code: int | None
    signal: int | None

    @property
    def exit_code(self) -> int:
        return self.code if self.code is not None else 128 + (self.signal or 0)


@dataclass
class SpawnedProcess:
    pid: int  # pid inside the sandbox's pid namespace
    exited: asyncio.Future[Exited] = field(repr=False)


@dataclass(frozen=True)
class PortInfo:
    """A listening TCP socket inside a sandbox."""

    port: int
    address: str
    family: str  # "tcp" or "tcp6"
    inode: int


@dataclass
class SandboxHandle:
    sandbox_id: str
    image: str
    root: Path  # host path of the sandbox's writable root filesystem
    init_pid: int  # host pid of the sandbox's PID 1


class Runtime(Protocol):
    async def start(self) -> None:
        """Check the host, prepare images and warm pools. Raises RuntimeError_ if unusable."""

    async def close(self, destroy_all: bool) -> None:
        """Stop background work; with destroy_all also tear down every live sandbox."""

    def resolve_image(self, image: str) -> str:
        """Map a public image name to a local image id, or raise UnknownImage."""

    async def create(self, config: SandboxConfig) -> SandboxHandle:
        """Create (or claim from the warm pool) a running sandbox with these limits."""

    async def reattach(self, sandbox_id: str) -> SandboxHandle | None:
        """After a server restart: reconnect to a live sandbox, or clean its remains and
        return None."""

    async def cleanup_orphans(self, keep: set[str]) -> None:
        """Remove every sandbox this backend left behind whose id is not in keep."""

    async def spawn(
        self,
        handle: SandboxHandle,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        stdio: tuple[int, int, int],
        tty: bool = False,
    ) -> SpawnedProcess:
        """Start a process in the sandbox with the given host fds as stdin/stdout/stderr.
        The caller keeps ownership of (and closes) its fds. With tty, stdio[0] is a pty slave
        (from open_pty) and becomes the new session's controlling terminal."""

    def open_pty(self, handle: SandboxHandle) -> tuple[int, int]:
        """A new (master, slave) pty pair usable by the sandbox's processes."""

    async def connect(
        self, handle: SandboxHandle, port: int, timeout: float = 5.0
    ) -> socket.socket:
        """A non-blocking TCP socket connected to 127.0.0.1:port inside the sandbox."""

    async def listening_ports(self, handle: SandboxHandle, pid: int | None) -> list[PortInfo]:
        """Listening TCP sockets in the sandbox; with pid, only those of that process's
        session (the process and the children it started)."""

    async def signal(self, handle: SandboxHandle, pid: int, signo: int) -> None:
        """Send a signal to the process group of a spawned process."""

    async def destroy(self, handle: SandboxHandle) -> None:
        """Kill everything in the sandbox and release every resource it holds."""

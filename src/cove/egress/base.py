"""The egress seam: what services need from a sandbox's way out to the network.

A backend attaches to a live sandbox (by the host pid of its init, whose network namespace it
serves), applies a domain policy that can change at any time, and keeps a bounded log of what
went out. The local backend (local.py) listens inside the netns and dials from the host; the
no-op backend (noop.py) leaves sandboxes without any network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from cove.domain.network import NetworkPolicy

PROXY_PORT = 3128
PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"


class EgressError(Exception):
    """Egress could not be set up for a sandbox (reason is safe to show)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Counters:
    requests: int = 0
    blocked: int = 0
    bytes_out: int = 0  # sandbox -> internet
    bytes_in: int = 0  # internet -> sandbox

    def as_json(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "blocked": self.blocked,
            "bytesOut": self.bytes_out,
            "bytesIn": self.bytes_in,
        }


@dataclass
class EgressReport:
    entries: list[dict[str, Any]] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)


class Egress(Protocol):
    def env(self) -> dict[str, str]:
        """Environment every process of an attached sandbox gets (proxy variables)."""

    async def attach(self, key: str, init_pid: int, policy: NetworkPolicy) -> None:
        """Start serving the sandbox whose init has host pid init_pid; raises EgressError."""

    def update(self, key: str, policy: NetworkPolicy) -> None:
        """Apply a new policy to new connections and requests from now on."""

    async def detach(self, key: str) -> None:
        """Stop serving the sandbox: listeners and open connections closed. Idempotent."""

    def report(self, key: str, limit: int) -> EgressReport | None:
        """The newest `limit` log entries (oldest first) and the counters, or None."""

    def counters(self, key: str) -> Counters | None:
        """Requests and bytes out/in (for metering) since this process attached the sandbox;
        still there for a while after its detach, so a final reading is possible. None when
        unknown."""

    async def close(self) -> None:
        """Detach every sandbox."""

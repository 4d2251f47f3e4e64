"""No egress: sandboxes keep their lo-only network namespace and nothing else (COVE_EGRESS=off)."""

from __future__ import annotations

from cove.domain.network import NetworkPolicy
from cove.egress.base import Counters, EgressReport


class NoEgress:
    def env(self) -> dict[str, str]:
        return {}

    async def attach(self, key: str, init_pid: int, policy: NetworkPolicy) -> None:
        return None

    def update(self, key: str, policy: NetworkPolicy) -> None:
        return None

    async def detach(self, key: str) -> None:
        return None

    def report(self, key: str, limit: int) -> EgressReport | None:
        return None

    def counters(self, key: str) -> Counters | None:
        return None

    async def close(self) -> None:
        return None

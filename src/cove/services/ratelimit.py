"""Per API key token buckets, in memory (a restart forgets them; a replica keeps its own)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from cove.domain.errors import RateLimited

# Buckets of keys idle long enough to be full again carry no information: they are dropped
# when the table grows past this, so unknown or rotated keys cannot grow it without bound.
_PRUNE_AT = 10_000


class RateLimiter:
    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate  # tokens per second; 0 = no limit
        self.burst = max(1, burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, at)

    def take(self, key: str) -> None:
        """Spend one token of `key`'s bucket, or raise RateLimited with whole seconds to wait."""
        if self.rate <= 0:
            return
        now = self._clock()
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = max(1, math.ceil((1.0 - tokens) / self.rate))
            raise RateLimited(
                f"rate limit exceeded: {self.rate:g} requests per second per API key "
                f"(burst {self.burst}); retry after {wait} s",
                wait,
            )
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > _PRUNE_AT:
            self._prune(now)

    def _prune(self, now: float) -> None:
        refill_s = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill_s}

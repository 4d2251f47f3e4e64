"""A sandbox's egress request log (a bounded ring) and its byte counters (for metering)."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any

from cove.egress.base import Counters, EgressReport

RING_SIZE = 1000


@dataclass
class Entry:
    """One request or tunnel; updated in place while it runs, so readers see live bytes."""

    method: str
    host: str
    port: int
    started: float
    status: int | str | None = None  # HTTP status, "tunnel", or None while unknown
    bytes_out: int = 0
    bytes_in: int = 0
    blocked: str | None = None
    duration_ms: float | None = None
    request_id: str | None = None  # the X-Blaxel-Request-Id the upstream got
    intercepted: bool = False  # HTTPS opened by the proxy to apply a routing rule

    def as_json(self) -> dict[str, Any]:
        return {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.started))
            + f".{int(self.started % 1 * 1000):03d}Z",
            "method": self.method,
            "host": self.host,
            "port": self.port,
            "status": self.status,
            "bytesOut": self.bytes_out,
            "bytesIn": self.bytes_in,
            "blocked": self.blocked,
            "durationMs": self.duration_ms,
            "requestId": self.request_id,
            "intercepted": self.intercepted,
        }


class RequestLog:
    def __init__(self, size: int = RING_SIZE) -> None:
        self._ring: collections.deque[Entry] = collections.deque(maxlen=size)
        self.counters = Counters()

    def start(self, method: str, host: str, port: int) -> Entry:
        entry = Entry(method, host, port, time.time())
        self._ring.append(entry)
        self.counters.requests += 1
        return entry

    def block(self, entry: Entry, reason: str, status: int) -> None:
        entry.blocked = reason
        entry.status = status
        self.counters.blocked += 1
        self.finish(entry)

    def sent(self, entry: Entry, n: int) -> None:
        entry.bytes_out += n
        self.counters.bytes_out += n

    def received(self, entry: Entry, n: int) -> None:
        entry.bytes_in += n
        self.counters.bytes_in += n

    def finish(self, entry: Entry) -> None:
        entry.duration_ms = round((time.time() - entry.started) * 1000, 2)

    def totals(self) -> Counters:
        return Counters(**vars(self.counters))

    def report(self, limit: int) -> EgressReport:
        entries = list(self._ring)[-limit:] if limit > 0 else []
        return EgressReport([e.as_json() for e in entries], self.totals())

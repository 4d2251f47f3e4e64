"""One JSON line per metric: {"name", "p50", "p95", "n", "unit", ...} (rule 3 of the house)."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable


def emit(name: str, samples: list[float], unit: str = "ms", **extra: object) -> dict:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    row = {
        "name": name,
        "p50": round(statistics.median(ordered), 3),
        "p95": round(p95, 3),
        "n": len(ordered),
        "unit": unit,
        **extra,
    }
    print(json.dumps(row), flush=True)
    return row


def timed(fn: Callable[[], object], n: int, warmup: int = 10) -> list[float]:
    """Milliseconds of n calls of fn, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out

"""One JSON line per metric: {"name", "p50", "p95", "n", "unit", ...} (rule 3 of the house)."""

from __future__ import annotations

import json
import statistics


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

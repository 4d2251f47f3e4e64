"""Durations as users write them: "30s", "30m", "1h", "7d", "2w", or a number of seconds."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from cove.domain.errors import InvalidRequest

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)([smhdw])")
_MAX_SECONDS = 366 * 86400


def parse_duration(value: str | int | float, field: str = "ttl") -> int:
    """Seconds in a duration; raises InvalidRequest naming the field when malformed."""
    if isinstance(value, bool):
        raise InvalidRequest(f"{field}: expected a duration like '30m' or a number of seconds")
    if isinstance(value, int | float):
        seconds = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        seconds = int(value.strip())
    elif isinstance(value, str) and _is_compound(value.strip().lower()):
        seconds = sum(int(n) * _UNITS[u] for n, u in _PART.findall(value.strip().lower()))
    else:
        raise InvalidRequest(f"{field}: {value!r} is not a duration like '30m', '2h' or '7d'")
    if seconds <= 0 or seconds > _MAX_SECONDS:
        raise InvalidRequest(f"{field}: must be between 1 second and 366 days")
    return seconds


def _is_compound(text: str) -> bool:
    return bool(text) and _PART.sub("", text) == ""


def parse_timestamp(value: str, field: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise InvalidRequest(f"{field}: {value!r} is not an ISO 8601 date") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 with milliseconds and Z, parseable by datetime.fromisoformat."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{value.microsecond // 1000:03d}Z"
    )

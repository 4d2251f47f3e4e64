"""An ephemeral run (seed 000 "Run Code"): its record, id, timeout rule and output cap."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from cove.domain.errors import InvalidRequest

DEFAULT_RUN_TIMEOUT_S, MAX_RUN_TIMEOUT_S = 30, 600
RUN_TIER = "xs"  # memory and price of every run
RUN_OUTPUT_LIMIT = 1024 * 1024  # a run keeps the last 1 MiB of stdout and of stderr


@dataclass
class Run:
    id: str
    workspace: str
    language: str
    timeout_s: int
    created_at: datetime
    status: str = "running"  # then completed | failed | timeout | error
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    duration_ms: int = 0
    completed_at: datetime | None = None
    error: str | None = None  # why, when set-up failed, time ran out or the platform failed


def new_run_id() -> str:
    return "run_" + secrets.token_hex(8)


def run_timeout(value: object) -> int:
    """`timeout` of a run: whole seconds from 1 to 600, 30 when absent."""
    if value is None:
        return DEFAULT_RUN_TIMEOUT_S
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_RUN_TIMEOUT_S:
        raise InvalidRequest(
            f"timeout must be a whole number of seconds from 1 to {MAX_RUN_TIMEOUT_S}"
        )
    return value


def tail(text: str, limit: int = RUN_OUTPUT_LIMIT) -> str:
    """The last `limit` bytes of text (UTF-8), cut at a character boundary."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[len(data) - limit :].decode("utf-8", errors="ignore")

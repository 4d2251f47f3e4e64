"""The platform's periodic work. Each sweep lives in its service; this only calls it on time.

- sandbox expiry (SandboxService.expire_due): ttl, expires date, expiration policies;
- preview expiry (PreviewService.expire_due): expired previews with their tokens, old tokens;
- cron (JobService.fire_due): scheduled jobs; the missed-run rule is domain.jobs.due_tick (at
  most one execution per job for the newest missed tick, stored before it starts).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from cove.domain.durations import utcnow
from cove.services.jobs import JobService
from cove.services.previews import PreviewService
from cove.services.sandboxes import SandboxService

log = logging.getLogger("cove.scheduler")


async def every(interval_s: float, sweep: Callable[[], Awaitable[None]], what: str) -> None:
    """Runs until cancelled; one failed pass never stops the loop."""
    while True:
        try:
            await sweep()
        except Exception:
            log.exception("%s failed", what)
        await asyncio.sleep(interval_s)


def start(
    sandboxes: SandboxService,
    previews: PreviewService,
    jobs: JobService,
    expiry_s: float,
    cron_tick_s: float,
) -> list[asyncio.Task[None]]:
    """Every loop as a task; the caller cancels them on shutdown."""
    loops = [
        every(expiry_s, sandboxes.expire_due, "sandbox expiry"),
        every(expiry_s, previews.expire_due, "preview expiry"),
        every(cron_tick_s, lambda: jobs.fire_due(utcnow()), "cron pass"),
    ]
    return [asyncio.ensure_future(loop) for loop in loops]

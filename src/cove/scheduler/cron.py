"""The cron loop: every tick, fire each scheduled job whose next cron tick has come.

Missed runs (cove was down, or a pass was late) follow domain.jobs.due_tick: at most ONE
execution per job, for the newest missed tick, then the schedule continues; the fired tick is
stored (jobs.last_tick) before the execution starts, so a restart never fires it twice.
"""

from __future__ import annotations

import asyncio
import logging

from cove.domain.durations import utcnow
from cove.services.jobs import JobService

log = logging.getLogger("cove.scheduler")


async def run_cron(jobs: JobService, tick_s: float) -> None:
    """Runs until cancelled; one failed pass never stops the loop."""
    while True:
        try:
            await jobs.fire_due(utcnow())
        except Exception:
            log.exception("cron pass failed")
        await asyncio.sleep(tick_s)

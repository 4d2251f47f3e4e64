"""Deletes sandboxes whose ttl, expires date or expiration policy has passed."""

from __future__ import annotations

import asyncio
import logging

from cove.services.sandboxes import SandboxService

log = logging.getLogger("cove.scheduler")


async def run_expiry(service: SandboxService, interval_s: float) -> None:
    """Runs until cancelled; one failed sweep never stops the loop."""
    while True:
        try:
            await service.expire_due()
        except Exception:
            log.exception("expiry sweep failed")
        await asyncio.sleep(interval_s)

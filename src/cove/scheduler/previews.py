"""Deletes expired previews (with their tokens) and purges long-expired preview tokens."""

from __future__ import annotations

import asyncio
import logging

from cove.services.previews import PreviewService

log = logging.getLogger("cove.scheduler")


async def run_preview_expiry(service: PreviewService, interval_s: float) -> None:
    """Runs until cancelled; one failed sweep never stops the loop. A sweep with nothing due
    is one comparison (the service keeps its next deadline)."""
    while True:
        try:
            await service.expire_due()
        except Exception:
            log.exception("preview expiry sweep failed")
        await asyncio.sleep(interval_s)

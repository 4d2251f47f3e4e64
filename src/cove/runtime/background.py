"""Background work at low CPU priority: warm-pool refills and teardowns.

On a small host a refill's `crun run` (~10 ms of CPU) competes with the request that just
claimed a sandbox. Threads of this executor run at nice 10, and so does every process they
spawn; a pooled sandbox's init is set back to nice 0 when it is claimed, before any user
process starts, so sandboxes never run deprioritised.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

NICE = 10
T = TypeVar("T")


def _lower_priority() -> None:
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)  # this thread only


_EXECUTOR = ThreadPoolExecutor(
    max_workers=2, thread_name_prefix="cove-bg", initializer=_lower_priority
)


async def in_background(fn: Callable[..., T], *args: object) -> T:
    return await asyncio.get_running_loop().run_in_executor(_EXECUTOR, fn, *args)


def restore_priority(pid: int) -> None:
    os.setpriority(os.PRIO_PROCESS, pid, 0)

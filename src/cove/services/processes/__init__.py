"""Processes of a sandbox (see manager.py); output buffers and streams (output.py)."""

from cove.services.processes.manager import (
    MAX_WAIT_S,
    ExecRequest,
    Process,
    ProcessManager,
    StdinConflict,
)
from cove.services.processes.output import VIEW_LIMIT, LineSplitter, Output

__all__ = [
    "MAX_WAIT_S",
    "VIEW_LIMIT",
    "ExecRequest",
    "LineSplitter",
    "Output",
    "Process",
    "ProcessManager",
    "StdinConflict",
]

"""The two process output streams the SDK reads.

- POST /process with `Accept: text/event-stream`: NDJSON lines {"type": stdout|stderr|keepalive|
  error|result, "data": ...}; result.data is the ProcessResponse as a JSON *string*.
- GET /process/{id}/logs/stream: text lines `stdout:<line>` / `stderr:<line>`, `[keepalive]`.

Both replay the output held so far (backfill), then follow until the process ends. Each stream
reads the process's journal at its own pace (a slow client only falls behind itself) and ends
after STREAM_MAX_S at the latest; the SDK reconnects its log stream every 30 s anyway.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from cove.api.sandbox.common import guarded
from cove.api.sandbox.procs import processes_of
from cove.services.processes import ExecRequest, LineSplitter, Process, ProcessManager

KEEPALIVE_S = 2.0  # below the 5 s read timeout of the sync SDK's log stream client
STREAM_MAX_S = 3600.0
_NO_BUFFERING = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


Batch = list[tuple[str, str]]  # (stdout|stderr|error, line); [] = keepalive due


async def follow(proc: Process) -> AsyncIterator[Batch]:
    """Batches of complete lines from the start of the held output until the process ended
    and its output is drained. One batch per wake-up, not per line: a stream costs one
    write per burst of output. An empty batch means KEEPALIVE_S passed in silence."""
    out = proc.output
    lines = LineSplitter()
    cursor = out.start
    deadline = asyncio.get_running_loop().time() + STREAM_MAX_S
    while asyncio.get_running_loop().time() < deadline:
        chunks, cursor, skipped = out.read(cursor)
        batch: Batch = []
        if skipped:
            batch.append(("error", "output dropped: this reader fell more than 4 MiB behind"))
        for stream, chunk in chunks:
            batch += lines.feed(stream, chunk)
        if out.closed and cursor == out.end:
            yield batch + lines.flush()
            return
        if batch:
            yield batch
        if not await out.wait(cursor, KEEPALIVE_S):
            yield []
    yield lines.flush()


async def exec_stream(
    processes: ProcessManager, req: ExecRequest, render: Callable[[Process], dict[str, Any]]
) -> Response:
    req.wait_for_completion = False  # the stream is the wait
    proc = await processes.exec(req)

    async def body() -> AsyncIterator[bytes]:
        async for batch in follow(proc):
            yield b"".join(_ndjson(k, d) for k, d in batch) if batch else _ndjson("keepalive", "")
        yield _ndjson("result", json.dumps(render(proc)))

    return StreamingResponse(body(), media_type="application/x-ndjson", headers=_NO_BUFFERING)


def _ndjson(kind: str, data: str) -> bytes:
    """= json.dumps({"type": kind, "data": data}) + "\n", faster: plain ASCII output lines
    (most of them) need no escaping, so they skip the JSON encoder."""
    if data.isascii() and data.isprintable() and '"' not in data and "\\" not in data:
        quoted = '"' + data + '"'
    else:
        quoted = json.dumps(data)
    return ('{"type": "' + kind + '", "data": ' + quoted + "}\n").encode()


@guarded
async def logs_stream(request: Request) -> Response:
    proc = processes_of(request).get(request.path_params["proc"])

    async def body() -> AsyncIterator[bytes]:
        async for batch in follow(proc):
            # The text framing has no error line (the SDK would pass one to on_log as output).
            text = "".join(f"{k}:{d}\n" for k, d in batch if k != "error")
            yield text.encode() if batch else b"[keepalive]\n"

    return StreamingResponse(body(), media_type="text/plain; charset=utf-8", headers=_NO_BUFFERING)

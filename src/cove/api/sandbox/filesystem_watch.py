"""/watch/filesystem/{path}: NDJSON events, `[keepalive]` lines every 30 s of silence."""

from __future__ import annotations

import json
import weakref
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from cove.api.common import flag
from cove.api.sandbox.common import guarded
from cove.api.sandbox.filesystem_common import csv, sandbox_files
from cove.domain.errors import CoveError
from cove.services.files import SandboxFiles
from cove.services.files.watch import Watcher

KEEPALIVE_S = 30.0
MAX_CONTENT = 1024 * 1024


@guarded
async def watch(request: Request) -> Response:
    files = sandbox_files(request)
    watcher = Watcher(files, "/" + request.path_params.get("path", ""), csv(request, "ignore"))
    await watcher.start()  # 404 here, before the stream starts, for a missing directory
    lines = _lines(files, watcher, flag(request, "withContent"))
    # A client gone before the first chunk never starts the generator (no finally): close then.
    weakref.finalize(lines, watcher.close)
    return StreamingResponse(lines, media_type="application/x-ndjson")


async def _lines(files: SandboxFiles, watcher: Watcher, with_content: bool) -> AsyncIterator[str]:
    async for event in watcher.events(KEEPALIVE_S):
        if event is None:
            yield "[keepalive]\n"
            continue
        line: dict[str, object] = {"op": event.op, "path": event.path, "name": event.name}
        if with_content and event.op in ("CREATE", "WRITE"):
            try:
                data = await files.read(f"{event.path}/{event.name}", MAX_CONTENT)
                line["content"] = data.decode("utf-8", errors="replace")
            except CoveError:
                pass  # a directory, gone again, or not a regular file
        yield json.dumps(line) + "\n"


ROUTES = [("/watch/filesystem/{path:path}", watch, ["GET"])]

"""/filesystem/{path} — read, write, list and delete files inside the sandbox's confined root.

Paths arrive as the SDK sends them: `/filesystem//tmp/f` (absolute path appended) or
`%2F`-encoded (decoded by the server before routing); both normalize to '/tmp/f'.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from cove.api.common import flag, json_object, typed
from cove.api.sandbox import (
    filesystem_multipart,
    filesystem_search,
    filesystem_tree,
    filesystem_watch,
)
from cove.api.sandbox.common import guarded
from cove.api.sandbox.filesystem_common import (
    directory_json,
    file_json,
    files_and_path,
    parse_mode,
    success,
)
from cove.api.sandbox.filesystem_form import FormStream
from cove.domain.errors import InvalidRequest
from cove.services.files import MAX_INLINE_READ, Entry, SandboxFiles
from cove.services.files.archive import tar_gz
from cove.services.files.stream import write_stream

OCTETS = "application/octet-stream"
SMALL_FILE = 4 * 1024 * 1024  # raw reads up to this size are sent in one piece
CHUNK = 1 << 20


def _wants_raw(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    if request.query_params.get("download") == "true" or "application/octet-stream" in accept:
        return True
    return bool(accept) and "application/json" not in accept and "*/*" not in accept


@guarded
async def read(request: Request) -> Response:
    files, path = files_and_path(request)
    raw = _wants_raw(request)
    if request.method == "HEAD":  # Starlette routes HEAD to the GET handler
        return _head(await files.stat(path))
    found = await files.fetch(path, SMALL_FILE if raw else MAX_INLINE_READ)
    entry = found.entry
    if found.children is not None:
        if flag(request, "download"):
            return _archive(files, path, entry)
        return JSONResponse(directory_json(entry, path, found.children))
    if found.fd is not None:
        if not raw:
            os.close(found.fd)
            raise InvalidRequest(f"{path} is larger than {MAX_INLINE_READ} bytes; read it raw")
        headers = {"content-length": str(entry.size)}
        return StreamingResponse(_chunks(found.fd, entry.size), media_type=OCTETS, headers=headers)
    assert found.data is not None
    if raw:
        return Response(found.data, media_type=OCTETS)
    return JSONResponse(
        {**file_json(entry), "content": found.data.decode("utf-8", errors="replace")}
    )


def _chunks(fd: int, size: int) -> Iterator[bytes]:
    """Exactly `size` bytes (the announced length), pulled from a worker thread."""
    try:
        left = size
        while left > 0:
            chunk = os.read(fd, min(CHUNK, left)) or b"\0" * min(CHUNK, left)
            left -= len(chunk)
            yield chunk
    finally:
        os.close(fd)


def _archive(files: SandboxFiles, path: str, entry: Entry) -> Response:
    name = (entry.name if entry.name != "/" else "root") + ".tar.gz"
    headers = {"content-disposition": f'attachment; filename="{name}"'}
    return StreamingResponse(tar_gz(files, path), media_type="application/gzip", headers=headers)


def _head(entry: Entry) -> Response:
    headers = {
        "x-file-type": "directory" if entry.is_dir else "file",
        "x-file-size": str(entry.size),
        "x-file-permissions": entry.permissions,
        "last-modified": entry.last_modified,
    }
    return Response(status_code=200, headers=headers)


@guarded
async def write(request: Request) -> Response:
    files, path = files_and_path(request)
    if path == "/":
        raise InvalidRequest("cannot write to /")
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = FormStream(request)
        mode = lambda: parse_mode(form.fields.get("permissions"), 0o644)  # noqa: E731
        await write_stream(files.rooted, path, form.file_chunks(), mode)
        return success(path)
    body = await json_object(request)
    is_dir = typed(body, "isDirectory", bool, "")
    mode = parse_mode(typed(body, "permissions", str, ""), 0o755 if is_dir else 0o644)
    if is_dir:
        await files.mkdir(path, mode)
    else:
        content = typed(body, "content", str, "") or ""
        await files.write(path, content.encode(), mode)
    return success(path)


@guarded
async def delete(request: Request) -> Response:
    files, path = files_and_path(request)
    if path == "/":
        raise InvalidRequest("cannot delete /")
    await files.delete(path, flag(request, "recursive"))
    return success(path, "deleted")


# Specific shapes first: Starlette takes the first route that matches.
ROUTES = (
    filesystem_tree.ROUTES
    + filesystem_search.ROUTES
    + filesystem_multipart.ROUTES
    + filesystem_watch.ROUTES
    + [
        ("/filesystem/{path:path}", read, ["GET"]),
        ("/filesystem/{path:path}", write, ["PUT"]),
        ("/filesystem/{path:path}", delete, ["DELETE"]),
    ]
)

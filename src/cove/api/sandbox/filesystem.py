"""/filesystem/{path} — read, write and list files inside the sandbox's confined root."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cove.api.common import json_object, typed
from cove.api.sandbox.common import guarded, running_sandbox
from cove.domain.errors import InvalidRequest
from cove.services.files import Entry, SandboxFiles, normalize


def _files(request: Request) -> tuple[SandboxFiles, str]:
    live = running_sandbox(request)
    assert live.files is not None
    return live.files, normalize(request.path_params.get("path", "/"))


def _file_json(e: Entry) -> dict[str, Any]:
    return {
        "path": e.path,
        "name": e.name,
        "size": e.size,
        "permissions": e.permissions,
        "owner": e.owner,
        "group": e.group,
        "lastModified": e.last_modified,
    }


def _wants_raw(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    if request.query_params.get("download") == "true" or "application/octet-stream" in accept:
        return True
    return bool(accept) and "application/json" not in accept and "*/*" not in accept


@guarded
async def read(request: Request) -> Response:
    files, path = _files(request)
    entry = await files.stat(path)
    if entry.is_dir:
        return JSONResponse(await _directory(files, path, entry))
    data = await files.read(path)
    if _wants_raw(request):
        return Response(data, media_type="application/octet-stream")
    return JSONResponse({**_file_json(entry), "content": data.decode("utf-8", errors="replace")})


async def _directory(files: SandboxFiles, path: str, entry: Entry) -> dict[str, Any]:
    children = await files.list_dir(path)
    return {
        "name": entry.name,
        "path": path,
        "files": [_file_json(c) for c in children if not c.is_dir],
        "subdirectories": [{"name": c.name, "path": c.path} for c in children if c.is_dir],
    }


@guarded
async def write(request: Request) -> Response:
    files, path = _files(request)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await _write_multipart(request, files, path)
    body = await json_object(request)
    mode = _mode(typed(body, "permissions", str, ""), 0o755 if body.get("isDirectory") else 0o644)
    if typed(body, "isDirectory", bool, ""):
        await files.mkdir(path, mode)
    else:
        content = typed(body, "content", str, "") or ""
        await files.write(path, content.encode(), mode)
    return JSONResponse({"message": "ok", "path": path})


async def _write_multipart(request: Request, files: SandboxFiles, path: str) -> Response:
    form = await request.form()
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise InvalidRequest("multipart body needs a 'file' part")
    permissions = form.get("permissions")
    mode = _mode(permissions if isinstance(permissions, str) else None, 0o644)
    await files.write(path, await upload.read(), mode)
    return JSONResponse({"message": "ok", "path": path})


def _mode(permissions: str | None, default: int) -> int:
    if not permissions:
        return default
    try:
        mode = int(permissions, 8)
    except ValueError:
        raise InvalidRequest(f"permissions {permissions!r} must be octal like '0644'") from None
    if not 0 <= mode <= 0o7777:
        raise InvalidRequest(f"permissions {permissions!r} out of range")
    return mode


ROUTES = [
    ("/filesystem/{path:path}", read, ["GET"]),
    ("/filesystem/{path:path}", write, ["PUT"]),
]

"""/filesystem-multipart: uploads of any size in parts, each streamed to the sandbox's disk."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cove.api.common import json_object, typed
from cove.api.sandbox.common import guarded
from cove.api.sandbox.filesystem_common import (
    files_and_path,
    parse_mode,
    sandbox_files,
    success,
)
from cove.api.sandbox.filesystem_form import FormStream
from cove.domain.errors import InvalidRequest
from cove.services.files import multipart
from cove.services.files.multipart import Upload


def _upload(request: Request) -> tuple[Any, Upload]:
    files = sandbox_files(request)
    return files, multipart.get(files, request.path_params["upload_id"])


def _upload_json(u: Upload) -> dict[str, Any]:
    return {
        "uploadId": u.id,
        "path": u.path,
        "permissions": u.permissions,
        "initiatedAt": u.initiated_at,
        "parts": {
            str(n): {"partNumber": n, "etag": p.etag, "size": p.size} for n, p in u.parts.items()
        },
    }


@guarded
async def initiate(request: Request) -> Response:
    files, path = files_and_path(request)
    body = await json_object(request, required=False)
    mode = parse_mode(typed(body, "permissions", str, ""), 0o644)
    upload = await multipart.initiate(files, path, mode)
    return JSONResponse({"uploadId": upload.id, "path": upload.path})


@guarded
async def put_part(request: Request) -> Response:
    files, upload = _upload(request)
    raw = request.query_params.get("partNumber", "")
    if not raw.isdigit():
        raise InvalidRequest("query parameter partNumber must be a positive integer")
    part = await multipart.put_part(files, upload, int(raw), FormStream(request).file_chunks())
    return JSONResponse({"partNumber": part.number, "etag": part.etag, "size": part.size})


@guarded
async def complete(request: Request) -> Response:
    files, upload = _upload(request)
    parts = typed(await json_object(request, required=False), "parts", list, "") or []
    wanted = []
    for p in parts:
        if not isinstance(p, dict) or not isinstance(p.get("partNumber"), int):
            raise InvalidRequest("each part needs an integer partNumber")
        wanted.append((p["partNumber"], p.get("etag") if isinstance(p.get("etag"), str) else None))
    path = await multipart.complete(files, upload, wanted)
    return success(path, "upload completed")


@guarded
async def abort(request: Request) -> Response:
    files, upload = _upload(request)
    await multipart.abort(files, upload)
    return success(upload.path, "upload aborted")


@guarded
async def list_parts(request: Request) -> Response:
    _files, upload = _upload(request)
    parts = [
        {"partNumber": p.number, "etag": p.etag, "size": p.size, "uploadedAt": p.uploaded_at}
        for p in sorted(upload.parts.values(), key=lambda p: p.number)
    ]
    return JSONResponse({"uploadId": upload.id, "parts": parts})


@guarded
async def list_uploads(request: Request) -> Response:
    files = sandbox_files(request)
    return JSONResponse({"uploads": [_upload_json(u) for u in multipart.list_uploads(files)]})


ROUTES = [
    ("/filesystem-multipart/initiate/{path:path}", initiate, ["POST"]),
    ("/filesystem-multipart/{upload_id}/part", put_part, ["PUT"]),
    ("/filesystem-multipart/{upload_id}/complete", complete, ["POST"]),
    ("/filesystem-multipart/{upload_id}/abort", abort, ["DELETE"]),
    ("/filesystem-multipart/{upload_id}/parts", list_parts, ["GET"]),
    ("/filesystem-multipart", list_uploads, ["GET"]),
]

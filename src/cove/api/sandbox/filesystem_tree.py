"""/filesystem/tree/{path} (read_tree / write_tree / delete) and /filesystem-copy."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cove.api.common import flag, int_param, json_object, typed
from cove.api.sandbox.common import guarded
from cove.api.sandbox.filesystem_common import (
    csv,
    directory_json,
    file_json,
    files_and_path,
    sandbox_files,
    success,
)
from cove.domain.errors import InvalidRequest
from cove.services.files import FileExists, normalize
from cove.services.files.tree import Filter, copy, read_tree, write_tree

MAX_TREE_FILES = 100_000
MAX_TREE_BYTES = 256 * 1024 * 1024


@guarded
async def get_tree(request: Request) -> Response:
    files, path = files_and_path(request)
    flt = Filter(
        csv(request, "patterns"), set(csv(request, "excludeDirs")), flag(request, "excludeHidden")
    )
    max_files = int_param(request, "maxFiles", 10_000, 1, MAX_TREE_FILES)
    max_bytes = int_param(request, "maxBytes", 32 * 1024 * 1024, 1, MAX_TREE_BYTES)
    with_content = flag(request, "content")
    top, found, dirs = await files.rooted.run(
        read_tree, files, path, flt, with_content, max_files, max_bytes
    )
    body = directory_json(top, path, [])
    body["files"] = [
        {**file_json(e), **({"content": c} if c is not None else {})} for e, c in found
    ]
    body["subdirectories"] = [{"name": d.name, "path": d.path} for d in dirs]
    body["recursive"] = True
    return JSONResponse(body)


@guarded
async def put_tree(request: Request) -> Response:
    files, path = files_and_path(request)
    tree = typed(await json_object(request), "files", dict, "") or {}
    await files.rooted.run(files.rooted.mkdirs, path)
    await files.rooted.run(write_tree, files, path, tree)
    entry = await files.stat(path)
    return JSONResponse(directory_json(entry, path, await files.list_dir(path)))


@guarded
async def delete_tree(request: Request) -> Response:
    files, path = files_and_path(request)
    if path == "/":
        raise InvalidRequest("cannot delete /")
    await files.delete(path, recursive=True)
    return success(path, "deleted")


@guarded
async def copy_files(request: Request) -> Response:
    files = sandbox_files(request)
    body = await json_object(request)
    source, dest = typed(body, "source", str, ""), typed(body, "destination", str, "")
    if not source or not dest:
        raise InvalidRequest("source and destination are required")
    source, dest = normalize(source), normalize(dest)
    no_overwrite = bool(typed(body, "noOverwrite", bool, ""))
    try:
        await files.rooted.run(copy, files.rooted, source, dest, no_overwrite)
    except FileExists as exc:  # the SDK maps exactly this code to FileExistsError
        return JSONResponse({"error": exc.message, "code": "FILE_ALREADY_EXISTS"}, status_code=409)
    return JSONResponse({"message": "Files copied", "source": source, "destination": dest})


ROUTES = [
    ("/filesystem/tree/{path:path}", get_tree, ["GET"]),
    ("/filesystem/tree/{path:path}", put_tree, ["PUT"]),
    ("/filesystem/tree/{path:path}", delete_tree, ["DELETE"]),
    ("/filesystem-copy", copy_files, ["POST"]),
]

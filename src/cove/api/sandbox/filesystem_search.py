"""find, content search and fuzzy search (also at seed 000's /filesystem/find and
/filesystem/search, which take the directory from ?path=)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cove.api.common import flag, int_param
from cove.api.sandbox.common import guarded
from cove.api.sandbox.filesystem_common import csv, query_path, sandbox_files
from cove.services.files import search
from cove.services.files.tree import Filter

MAX_RESULTS = 100_000
DEFAULT_EXCLUDED = ["node_modules"]


def _filter(request: Request) -> Filter:
    """Hidden entries and node_modules are left out unless the caller says otherwise."""
    exclude = set(csv(request, "excludeDirs") or DEFAULT_EXCLUDED)
    return Filter(csv(request, "patterns"), exclude, flag(request, "excludeHidden", default=True))


@guarded
async def find(request: Request) -> Response:
    files, path = sandbox_files(request), query_path(request)
    kind = request.query_params.get("type") or None
    limit = int_param(request, "maxResults", 1000, 1, MAX_RESULTS)
    found = await search.find(files, path, kind, _filter(request), limit)
    matches = [{"path": p, "type": t} for p, t in found]
    return JSONResponse({"matches": matches, "total": len(matches)})


@guarded
async def content_search(request: Request) -> Response:
    files, path = sandbox_files(request), query_path(request)
    query = request.query_params.get("query", "")
    found = await search.grep(
        files,
        path,
        query,
        case_sensitive=flag(request, "caseSensitive"),
        context=int_param(request, "contextLines", 0, 0, 20),
        limit=int_param(request, "maxResults", 100, 1, MAX_RESULTS),
        file_pattern=request.query_params.get("filePattern") or None,
        exclude_dirs=csv(request, "excludeDirs"),
    )
    matches = [
        {"path": m.path, "line": m.line, "column": m.column, "text": m.text}
        | ({"context": m.context} if m.context is not None else {})
        for m in found
    ]
    return JSONResponse({"matches": matches, "query": query, "total": len(matches)})


@guarded
async def fuzzy(request: Request) -> Response:
    files, path = sandbox_files(request), query_path(request)
    query = request.query_params.get("query", "")
    limit = int_param(request, "maxResults", 20, 1, 10_000)
    found = await files.rooted.run(search.fuzzy, files, path, query, _filter(request), limit)
    matches = [{"path": p, "score": s, "type": t} for p, s, t in found]
    return JSONResponse({"matches": matches, "total": len(matches)})


ROUTES = [
    ("/filesystem-find/{path:path}", find, ["GET"]),
    ("/filesystem-find", find, ["GET"]),
    ("/filesystem-content-search/{path:path}", content_search, ["GET"]),
    ("/filesystem-content-search", content_search, ["GET"]),
    ("/filesystem-search/{path:path}", fuzzy, ["GET"]),
    ("/filesystem-search", fuzzy, ["GET"]),
    ("/filesystem/find", find, ["GET"]),
    ("/filesystem/search", content_search, ["GET"]),
]

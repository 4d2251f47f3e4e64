"""What the filesystem handlers share: the addressed sandbox's files and the wire shapes."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cove.api.sandbox.common import running_sandbox
from cove.domain.errors import InvalidRequest
from cove.services.files import Entry, SandboxFiles, normalize


def sandbox_files(request: Request) -> SandboxFiles:
    live = running_sandbox(request)
    assert live.files is not None
    return live.files


def files_and_path(request: Request) -> tuple[SandboxFiles, str]:
    return sandbox_files(request), normalize(request.path_params.get("path", "/"))


def file_json(e: Entry) -> dict[str, Any]:
    return {
        "path": e.path,
        "name": e.name,
        "size": e.size,
        "permissions": e.permissions,
        "owner": e.owner,
        "group": e.group,
        "lastModified": e.last_modified,
    }


def directory_json(entry: Entry, path: str, children: list[Entry]) -> dict[str, Any]:
    return {
        "name": entry.name,
        "path": path,
        "files": [file_json(c) for c in children if not c.is_dir],
        "subdirectories": [{"name": c.name, "path": c.path} for c in children if c.is_dir],
    }


def success(path: str, message: str = "ok") -> Response:
    return JSONResponse({"message": message, "path": path})


def parse_mode(permissions: str | None, default: int) -> int:
    if not permissions:
        return default
    try:
        mode = int(permissions, 8)
    except ValueError:
        raise InvalidRequest(f"permissions {permissions!r} must be octal like '0644'") from None
    if not 0 <= mode <= 0o7777:
        raise InvalidRequest(f"permissions {permissions!r} out of range")
    return mode


def csv(request: Request, name: str) -> list[str]:
    """'a,b' (or repeated ?name=a&name=b) → ['a', 'b']."""
    return [
        v.strip() for raw in request.query_params.getlist(name) for v in raw.split(",") if v.strip()
    ]


def query_path(request: Request) -> str:
    """The path of a route that has it in the URL, else in ?path= (seed 000 shapes)."""
    return normalize(request.path_params.get("path") or request.query_params.get("path") or "/")

"""POST /v1/sandboxes/{name}/deploy — JSON `{"files", "runtime"?, "entrypoint"?}` or a gzip
tarball body (runtime and entrypoint as query parameters). 202 with the sandbox ("building")."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cove.api.common import guarded, json_object, read_body, workspace_of
from cove.api.v1.sandboxes import error, render
from cove.domain.deploy import Source, json_source
from cove.domain.deploy_tarball import tarball_source
from cove.domain.errors import InvalidRequest
from cove.services.deploys import DeployService

MAX_TARBALL = 50 * 1024 * 1024  # compressed body
GZIP_TYPES = {
    "application/gzip",
    "application/x-gzip",
    "application/x-tar+gzip",
    "application/tar+gzip",
    "application/x-gtar",
    "application/x-compressed-tar",
}


def _service(request: Request) -> DeployService:
    return request.app.state.deploys


@guarded(error)
async def deploy(request: Request) -> Response:
    workspace, name = workspace_of(request), request.path_params["name"]
    await request.app.state.sandboxes.get_or_gone(workspace, name)  # 404 / 410 first
    source = await _source(request)
    live = await _service(request).deploy(workspace, name, source)
    return JSONResponse(render(request, live.record), status_code=202)


async def _source(request: Request) -> Source:
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind in GZIP_TYPES:
        body = await read_body(request, MAX_TARBALL, "the tarball")
        runtime, entry = request.query_params.get("runtime"), request.query_params.get("entrypoint")
        # Decompressing up to 200 MiB stays off the event loop.
        return await asyncio.to_thread(tarball_source, body, runtime, entry)
    # curl -d sends form-urlencoded; every other v1 body is read as JSON whatever it says
    if kind not in ("", "application/json", "application/x-www-form-urlencoded"):
        raise InvalidRequest(
            f"Content-Type {kind!r}: send application/json (a files map) or application/gzip "
            "(a tarball)"
        )
    return json_source(await json_object(request))


routes = [Route("/v1/sandboxes/{name}/deploy", deploy, methods=["POST"])]

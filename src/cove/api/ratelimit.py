"""429 for /v0 and /v1 API requests past their API key's rate (services/ratelimit.py).

One place for every API route, before any handler runs, so a limited request has no effect.
Preview and session traffic is answered by the edge middleware outside this one, and the
in-sandbox API at /sbx is not limited. Requests without a valid key pass on to get their 401.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from cove.domain.errors import CoveError, RateLimited

_LIMITED = ("/v0/", "/v1/")


class RateLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(_LIMITED):
            refused = _check(scope)
            if refused is not None:
                await _render(scope["path"], refused)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _check(scope: Scope) -> RateLimited | None:
    state = scope["app"].state
    limiter = getattr(state, "rate_limiter", None)
    if limiter is None or limiter.rate <= 0:
        return None
    headers = Headers(scope=scope)
    token = headers.get("x-blaxel-authorization") or headers.get("authorization")
    try:
        state.auth.authenticate(token, None)
    except CoveError:
        return None
    try:
        limiter.take(token or "")
    except RateLimited as exc:
        return exc
    return None


def _render(path: str, exc: RateLimited) -> JSONResponse:
    if path.startswith("/v1/"):  # api/v1/sandboxes.py error()
        body = {"error": exc.code.lower(), "message": exc.message, "statusCode": exc.status}
    else:  # api/v0/sandboxes.py _error()
        body = {"error": exc.message, "code": exc.status, "message": exc.message}
    headers = {"Retry-After": str(exc.retry_after)}
    return JSONResponse({**body, **exc.details}, status_code=exc.status, headers=headers)

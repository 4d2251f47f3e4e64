"""Previews (a URL onto one port of a sandbox) and their access tokens."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cove.domain.durations import utcnow
from cove.domain.errors import InvalidRequest
from cove.domain.sandbox import validate_name

SANDBOX_API_PORT = 443  # a preview on this port serves the sandbox API itself (sessions)
# An expired token stays listed (`expired: true`) for as long as it was valid, at most this long,
# then it is deleted: however fast tokens are minted, about as many dead ones are kept as live.
EXPIRED_TOKEN_KEPT_MAX = timedelta(hours=1)


@dataclass
class PreviewSpec:
    port: int
    public: bool = False
    prefix_url: str | None = None
    custom_domain: str | None = None
    request_headers: dict[str, str] = field(default_factory=dict)
    response_headers: dict[str, str] = field(default_factory=dict)
    ttl: str | None = None
    expires: str | None = None


@dataclass
class Preview:
    id: str
    workspace: str
    sandbox_id: str
    sandbox_name: str
    name: str
    spec: PreviewSpec
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    expires_at: datetime | None = None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or utcnow())


@dataclass
class PreviewToken:
    name: str
    preview_id: str
    value: str  # stored as-is: the SDK lists tokens with their values (sessions.list)
    expires_at: datetime
    created_at: datetime = field(default_factory=utcnow)

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at <= (now or utcnow())

    def purge_at(self) -> datetime:
        kept = min(max(self.expires_at - self.created_at, timedelta(0)), EXPIRED_TOKEN_KEPT_MAX)
        return self.expires_at + kept


def new_preview_id() -> str:
    return "prv_" + secrets.token_hex(8)


def new_token_value() -> str:
    return secrets.token_urlsafe(32)


def new_token_name() -> str:
    return "token-" + secrets.token_hex(6)


def validate_preview_name(name: str) -> str:
    try:
        return validate_name(name)
    except InvalidRequest:
        raise InvalidRequest(
            f"preview name {name!r} is invalid: use 2-63 lowercase letters, digits or hyphens, "
            "starting and ending with a letter or digit"
        ) from None


def validate_port(port: Any) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise InvalidRequest("spec.port must be an integer from 1 to 65535")
    return port


def validate_headers(headers: Any, where: str) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise InvalidRequest(f"{where} must be an object of string values")
    for key, value in headers.items():
        if not key or any(c in key for c in " :\r\n\t") or any(c in value for c in "\r\n"):
            raise InvalidRequest(f"{where}: {key!r} is not a valid header")
    return dict(headers)

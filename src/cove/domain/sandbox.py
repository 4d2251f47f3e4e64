"""The Sandbox entity, its lifecycle and its expiration rules — one model for every surface."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cove.domain.durations import parse_duration, parse_timestamp, utcnow
from cove.domain.errors import InvalidRequest


class Status(StrEnum):
    PROVISIONING = "provisioning"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"
    DELETING = "deleting"
    DELETED = "deleted"


TIER_MEMORY_MB = {"xs": 2048, "s": 4096, "m": 8192, "l": 16384, "xl": 32768}
DEFAULT_TIER = "s"
MIN_MEMORY_MB, MAX_MEMORY_MB = 64, 32768

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
POLICY_TYPES = ("ttl-idle", "ttl-max-age", "date")


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequest(
            f"name {name!r} is invalid: use 2-63 lowercase letters, digits or hyphens, "
            "starting and ending with a letter or digit"
        )
    return name


def generate_name() -> str:
    return "sandbox-" + secrets.token_hex(4)


def new_sandbox_id() -> str:
    return "sbox_" + secrets.token_hex(8)


@dataclass(frozen=True)
class Port:
    target: int
    name: str | None = None
    protocol: str = "HTTP"

    def __post_init__(self) -> None:
        if not isinstance(self.target, int) or isinstance(self.target, bool):
            raise InvalidRequest("port: target must be an integer")
        if not 1 <= self.target <= 65535:
            raise InvalidRequest(f"port {self.target} is out of range 1-65535")
        if self.protocol not in ("HTTP", "TCP", "TLS", "UDP"):
            raise InvalidRequest(f"port protocol {self.protocol!r} must be HTTP, TCP, TLS or UDP")


@dataclass(frozen=True)
class ExpirationPolicy:
    type: str
    value: str
    action: str = "delete"

    def __post_init__(self) -> None:
        if self.type not in POLICY_TYPES:
            raise InvalidRequest(
                f"expirationPolicies: type {self.type!r} must be one of {', '.join(POLICY_TYPES)}"
            )
        if self.action != "delete":
            raise InvalidRequest(f"expirationPolicies: action {self.action!r} must be 'delete'")
        # Parsed once: the expiry sweep asks every sandbox for its deadline 4 times a second.
        if self.type == "date":
            object.__setattr__(
                self, "_date", parse_timestamp(self.value, "expirationPolicies.value")
            )
        else:
            span = timedelta(seconds=parse_duration(self.value, "expirationPolicies.value"))
            object.__setattr__(self, "_span", span)

    def deadline(self, created_at: datetime, last_used_at: datetime) -> datetime:
        if self.type == "date":
            return self._date  # type: ignore[attr-defined, no-any-return]
        base = created_at if self.type == "ttl-max-age" else last_used_at
        return base + self._span  # type: ignore[attr-defined, no-any-return]


def validate_envs(envs: dict[str, str]) -> dict[str, str]:
    for key, value in envs.items():
        if not isinstance(key, str) or not _ENV_NAME.match(key):
            raise InvalidRequest(f"envs: {key!r} is not a valid environment variable name")
        if not isinstance(value, str):
            raise InvalidRequest(f"envs: value of {key} must be a string")
    return envs


def validate_memory(memory_mb: int) -> int:
    if not isinstance(memory_mb, int) or isinstance(memory_mb, bool):
        raise InvalidRequest("memory must be an integer number of MB")
    if not MIN_MEMORY_MB <= memory_mb <= MAX_MEMORY_MB:
        raise InvalidRequest(f"memory must be between {MIN_MEMORY_MB} and {MAX_MEMORY_MB} MB")
    return memory_mb


@dataclass
class SandboxSpec:
    """What a user asks for; replaced whole by a v0 PUT."""

    image: str = "blaxel/base-image:latest"
    memory_mb: int = 4096
    tier: str | None = None
    envs: dict[str, str] = field(default_factory=dict)
    ports: list[Port] = field(default_factory=list)
    ttl: str | None = None
    expires: str | None = None
    policies: list[ExpirationPolicy] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    display_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # spec fields kept verbatim (region, …)


@dataclass
class Sandbox:
    id: str
    workspace: str
    name: str
    spec: SandboxSpec
    status: Status = Status.PROVISIONING
    external_id: str | None = None
    source: str = "sandbox"
    runtime_id: str | None = None
    reason: str | None = None  # why it failed or stopped
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    last_used_at: datetime = field(default_factory=utcnow)
    expires_at: datetime | None = None  # from ttl / expires, extended by v1 PATCH
    deleted_at: datetime | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def deadline(self) -> datetime | None:
        """The earliest moment any expiration rule deletes this sandbox."""
        candidates = [p.deadline(self.created_at, self.last_used_at) for p in self.spec.policies]
        if self.expires_at is not None:
            candidates.append(self.expires_at)
        return min(candidates) if candidates else None

    def set_ttl_from_spec(self) -> None:
        """expires_at from spec.ttl (counted from creation) and spec.expires (a date)."""
        candidates = []
        if self.spec.ttl:
            candidates.append(self.created_at + timedelta(seconds=parse_duration(self.spec.ttl)))
        if self.spec.expires:
            candidates.append(parse_timestamp(self.spec.expires, "expires"))
        self.expires_at = min(candidates) if candidates else None

    def record(self, kind: str, message: str, status: str) -> None:
        self.events.append(
            {"type": kind, "status": status, "message": message, "time": utcnow().isoformat()}
        )
        del self.events[:-20]  # bounded history

    def touch(self) -> None:
        self.last_used_at = utcnow()

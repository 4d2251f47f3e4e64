"""A sandbox's network policy (`spec.network`): which domains its egress proxy lets through.

Shapes: spec/controlplane-sdk-derived.json SandboxNetwork / ProxyConfig / ProxyTarget; behaviour:
seed 002 "Proxy-domains". No allowedDomains = every public domain; forbiddenDomains always win.
`*.example.com` matches every name below example.com but not example.com itself; `*` matches all.
Address rules (loopback, private ranges, the host) are not policy: egress/ applies them always.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cove.domain.errors import InvalidRequest

# A hostname or IP literal, optionally prefixed by "*." — no ports, schemes or paths.
_PATTERN = re.compile(r"^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_.:-]{0,251}[A-Za-z0-9_])?$")
MAX_PATTERNS = 1000


def normalize_host(host: str) -> str:
    """Lower-case, without a trailing dot or IPv6 brackets: the form patterns match against."""
    return host.strip().strip("[]").rstrip(".").lower()


def matches(pattern: str, host: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


@dataclass(frozen=True)
class NetworkPolicy:
    allowed: tuple[str, ...] | None = None  # None: every domain not forbidden
    forbidden: tuple[str, ...] = ()

    def refusal(self, host: str) -> str | None:
        """Why `host` may not be reached under this policy, or None when it may."""
        name = normalize_host(host)
        for pattern in self.forbidden:
            if matches(pattern, name):
                return f"{name} matches forbiddenDomains entry {pattern!r}"
        if self.allowed is not None and not any(matches(p, name) for p in self.allowed):
            return f"{name} is not in allowedDomains"
        return None


OPEN = NetworkPolicy()


def parse_network(raw: Any) -> NetworkPolicy:
    """spec.network → policy; InvalidRequest naming the field on a bad shape.

    allowedDomains/forbiddenDomains may be given on the network and on network.proxy (both
    shapes exist in the SDK); the lists are merged.
    """
    if raw is None:
        return OPEN
    if not isinstance(raw, dict):
        raise InvalidRequest("spec.network must be an object")
    proxy = raw.get("proxy")
    if proxy is not None and not isinstance(proxy, dict):
        raise InvalidRequest("spec.network.proxy must be an object")
    proxy = proxy or {}
    allowed = _patterns(raw, "allowedDomains", "spec.network.")
    allowed_proxy = _patterns(proxy, "allowedDomains", "spec.network.proxy.")
    forbidden = _patterns(raw, "forbiddenDomains", "spec.network.") or []
    forbidden += _patterns(proxy, "forbiddenDomains", "spec.network.proxy.") or []
    _patterns(proxy, "bypass", "spec.network.proxy.")
    _routes(proxy.get("routing"))
    merged = None
    if allowed is not None or allowed_proxy is not None:
        merged = tuple((allowed or []) + (allowed_proxy or []))
    return NetworkPolicy(merged, tuple(forbidden))


def _patterns(data: dict[str, Any], key: str, where: str) -> list[str] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_PATTERNS:
        raise InvalidRequest(f"{where}{key} must be a list of at most {MAX_PATTERNS} domains")
    out = []
    for item in value:
        if not isinstance(item, str):
            raise InvalidRequest(f"{where}{key}: every entry must be a string")
        name = normalize_host(item)
        if name != "*" and not _PATTERN.match(name):
            raise InvalidRequest(
                f"{where}{key}: {item!r} is not a domain, '*.domain' wildcard or '*'"
            )
        out.append(name)
    return out


def _routes(routing: Any) -> None:
    """Routing rules are kept (and their secrets never shown) but not applied yet."""
    if routing is None:
        return
    if not isinstance(routing, list):
        raise InvalidRequest("spec.network.proxy.routing must be a list")
    for rule in routing:
        if not isinstance(rule, dict):
            raise InvalidRequest("spec.network.proxy.routing: each rule must be an object")
        _patterns(rule, "destinations", "spec.network.proxy.routing[].")
        for key in ("headers", "body", "secrets"):
            if rule.get(key) is not None and not isinstance(rule[key], dict):
                raise InvalidRequest(f"spec.network.proxy.routing[].{key} must be an object")


def redacted(raw: Any) -> Any:
    """spec.network as shown by the API: routing secrets are write-only."""
    if not isinstance(raw, dict) or not isinstance(raw.get("proxy"), dict):
        return raw
    proxy = dict(raw["proxy"])
    if isinstance(proxy.get("routing"), list):
        proxy["routing"] = [
            {k: v for k, v in r.items() if k != "secrets"} if isinstance(r, dict) else r
            for r in proxy["routing"]
        ]
    return {**raw, "proxy": proxy}

"""A sandbox's network policy (`spec.network`): which domains its egress proxy lets through, and
the routing rules it applies to requests on their way out.

Shapes: spec/controlplane-sdk-derived.json SandboxNetwork / ProxyConfig / ProxyTarget; behaviour:
seed 002 "Proxy", "Proxy-domains", "Proxy-secrets-injection". No allowedDomains = every public
domain; forbiddenDomains always win. `*.example.com` matches every name below example.com but not
example.com itself; `*` matches all. Address rules (loopback, private ranges, the host) are not
policy: egress/ applies them always, to bypassed hosts too.

A routing rule (Route) adds headers and JSON body fields to requests for its destinations; their
values may hold `{{SECRET:name}}` placeholders, resolved (by the proxy, never inside the sandbox)
from that rule's own secrets only. Secrets are write-only: `redacted` drops them from every
rendering, and they stay out of reprs so no log line can carry them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from cove.domain.errors import InvalidRequest

# A hostname or IP literal, optionally prefixed by "*." — no ports, schemes or paths.
_PATTERN = re.compile(r"^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_.:-]{0,251}[A-Za-z0-9_])?$")
_SECRET_REF = re.compile(r"\{\{SECRET:([^{}]{1,128})\}\}")
_SECRET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
# The proxy frames every request itself: these may not be injected.
_FRAMING = {"host", "content-length", "transfer-encoding", "connection", "te", "upgrade"}
_FRAMING |= {"proxy-connection", "keep-alive", "trailer", "expect"}
MAX_PATTERNS = 1000
MAX_ROUTES = 100
MAX_ENTRIES = 100  # headers, body fields or secrets per rule
MAX_VALUE = 16 * 1024  # characters of one header value or secret; a rule's body as JSON


def normalize_host(host: str) -> str:
    """Lower-case, without a trailing dot or IPv6 brackets: the form patterns match against."""
    return host.strip().strip("[]").rstrip(".").lower()


def matches(pattern: str, host: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def _specificity(pattern: str) -> tuple[int, int]:
    """Exact names beat wildcards, longer wildcards beat shorter ones, `*` comes last."""
    if pattern == "*":
        return (0, 0)
    return (1, len(pattern)) if pattern.startswith("*.") else (2, len(pattern))


@dataclass(frozen=True)
class Route:
    destinations: tuple[str, ...]
    headers: tuple[tuple[str, str], ...] = ()
    body: dict[str, Any] = field(default_factory=dict, hash=False)
    secrets: dict[str, str] = field(default_factory=dict, hash=False, repr=False)

    @property
    def rewrites(self) -> bool:
        """Whether requests need rewriting (so HTTPS to these hosts is intercepted): injected
        headers or fields, or secrets the sandbox's own placeholders may refer to."""
        return bool(self.headers or self.body or self.secrets)

    def match(self, host: str) -> tuple[int, int] | None:
        found = [_specificity(p) for p in self.destinations if matches(p, host)]
        return max(found) if found else None

    def resolve(self, text: str) -> str:
        """`{{SECRET:name}}` → this rule's secret; unknown names stay as they are."""
        if "{{SECRET:" not in text:
            return text
        return _SECRET_REF.sub(lambda m: self.secrets.get(m.group(1), m.group(0)), text)

    def resolve_json(self, value: Any) -> Any:
        """resolve() on every string inside a JSON value (keys stay as they are)."""
        if isinstance(value, str):
            return self.resolve(value)
        if isinstance(value, list):
            return [self.resolve_json(v) for v in value]
        if isinstance(value, dict):
            return {k: self.resolve_json(v) for k, v in value.items()}
        return value


@dataclass(frozen=True)
class NetworkPolicy:
    allowed: tuple[str, ...] | None = None  # None: every domain not forbidden
    forbidden: tuple[str, ...] = ()
    routes: tuple[Route, ...] = ()
    # proxy.bypass: requests to these hosts go out untouched (no rule, no interception, no
    # request id). A sandbox has no path around the proxy, so "direct" cannot mean more than
    # that; the domain policy and the address rules still apply.
    bypass: tuple[str, ...] = ()

    def refusal(self, host: str) -> str | None:
        """Why `host` may not be reached under this policy, or None when it may."""
        name = normalize_host(host)
        for pattern in self.forbidden:
            if matches(pattern, name):
                return f"{name} matches forbiddenDomains entry {pattern!r}"
        if self.allowed is not None and not any(matches(p, name) for p in self.allowed):
            return f"{name} is not in allowedDomains"
        return None

    def bypassed(self, host: str) -> bool:
        name = normalize_host(host)
        return any(matches(p, name) for p in self.bypass)

    def route_for(self, host: str) -> Route | None:
        """The one rule that applies to requests for `host`: the most specific match, the first
        listed on a tie; None for bypassed hosts. One rule only, so no rule's headers or secrets
        ever reach another rule's destinations."""
        name = normalize_host(host)
        if not self.routes or self.bypassed(name):
            return None
        best: tuple[tuple[int, int], Route] | None = None
        for route in self.routes:
            score = route.match(name)
            if score is not None and (best is None or score > best[0]):
                best = (score, route)
        return best[1] if best else None


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
    bypass = _patterns(proxy, "bypass", "spec.network.proxy.") or []
    merged = None
    if allowed is not None or allowed_proxy is not None:
        merged = tuple((allowed or []) + (allowed_proxy or []))
    routes = _routes(proxy.get("routing"))
    return NetworkPolicy(merged, tuple(forbidden), routes, tuple(bypass))


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


def _routes(routing: Any) -> tuple[Route, ...]:
    if routing is None:
        return ()
    if not isinstance(routing, list) or len(routing) > MAX_ROUTES:
        raise InvalidRequest(f"spec.network.proxy.routing must be a list of at most {MAX_ROUTES}")
    return tuple(_route(rule, f"spec.network.proxy.routing[{i}]") for i, rule in enumerate(routing))


def _route(rule: Any, where: str) -> Route:
    if not isinstance(rule, dict):
        raise InvalidRequest(f"{where} must be an object")
    for key in ("headers", "body", "secrets"):
        value = rule.get(key)
        if value is not None and (not isinstance(value, dict) or len(value) > MAX_ENTRIES):
            raise InvalidRequest(
                f"{where}.{key} must be an object of at most {MAX_ENTRIES} entries"
            )
    destinations = _patterns(rule, "destinations", f"{where}.") or []
    route = Route(tuple(destinations), (), {}, _secrets(rule.get("secrets") or {}, where))
    headers = tuple(_header(n, v, route, where) for n, v in (rule.get("headers") or {}).items())
    body = rule.get("body") or {}
    if len(json.dumps(body)) > MAX_VALUE:
        raise InvalidRequest(f"{where}.body is larger than {MAX_VALUE} characters as JSON")
    return Route(route.destinations, headers, body, route.secrets)


def _secrets(secrets: dict[str, Any], where: str) -> dict[str, str]:
    """Error messages name a secret, never its value."""
    for name, value in secrets.items():
        if not _SECRET_NAME.match(name):
            raise InvalidRequest(f"{where}.secrets: {name[:40]!r} is not a name of [A-Za-z0-9_.-]")
        if not isinstance(value, str) or len(value) > MAX_VALUE:
            raise InvalidRequest(
                f"{where}.secrets.{name} must be a string of at most {MAX_VALUE} characters"
            )
    return dict(secrets)


def _header(name: Any, value: Any, route: Route, where: str) -> tuple[str, str]:
    if not _HEADER_NAME.match(name) or name.lower() in _FRAMING:
        raise InvalidRequest(f"{where}.headers: {name[:40]!r} cannot be injected")
    if not isinstance(value, str) or len(value) > MAX_VALUE:
        raise InvalidRequest(f"{where}.headers.{name} must be a string of at most {MAX_VALUE}")
    if any(c in route.resolve(value) for c in "\r\n\0"):
        raise InvalidRequest(f"{where}.headers.{name} (or a secret it uses) holds a line break")
    return name, value


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


def keep_secrets(stored: Any, sent: Any) -> Any:
    """spec.network for a PUT, with the stored secrets its rules leave out.

    A PUT replaces spec.network, but no response ever shows secrets, so every client that reads,
    changes and writes back a sandbox (the SDK's update_network, update_ttl, update_metadata)
    sends its rules without them and would wipe them. Rule: a rule sent WITHOUT a `secrets` key
    keeps the secrets of the stored rule with the same destinations (in order, when several
    share them); `"secrets": {}` clears them; a rule or network left out goes with its secrets.
    """
    old_rules, new_rules = _rules_of(stored), _rules_of(sent)
    if not old_rules or not new_rules:
        return sent
    kept: dict[tuple[str, ...], list[Any]] = {}
    for rule in old_rules:
        if isinstance(rule, dict) and isinstance(rule.get("secrets"), dict):
            kept.setdefault(_destinations_key(rule), []).append(rule["secrets"])
    merged = []
    for rule in new_rules:
        if isinstance(rule, dict) and "secrets" not in rule and kept.get(_destinations_key(rule)):
            rule = {**rule, "secrets": kept[_destinations_key(rule)].pop(0)}
        merged.append(rule)
    return {**sent, "proxy": {**sent["proxy"], "routing": merged}}


def _rules_of(raw: Any) -> list[Any]:
    proxy = raw.get("proxy") if isinstance(raw, dict) else None
    routing = proxy.get("routing") if isinstance(proxy, dict) else None
    return routing if isinstance(routing, list) else []


def _destinations_key(rule: dict[str, Any]) -> tuple[str, ...]:
    found = rule.get("destinations")
    items = found if isinstance(found, list) else []
    return tuple(sorted(normalize_host(d) for d in items if isinstance(d, str)))

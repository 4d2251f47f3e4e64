"""Blaxel control-plane JSON <-> domain sandbox (shapes: spec/controlplane-sdk-derived.json)."""

from __future__ import annotations

from typing import Any

from cove.api.common import typed
from cove.domain.durations import iso, utcnow
from cove.domain.errors import InvalidRequest
from cove.domain.network import parse_network, redacted
from cove.domain.sandbox import (
    ExpirationPolicy,
    Port,
    Sandbox,
    SandboxSpec,
    Status,
    validate_envs,
    validate_memory,
    validate_name,
)

STATUS = {
    Status.PROVISIONING: "DEPLOYING",
    Status.RUNNING: "DEPLOYED",
    Status.STOPPED: "DEACTIVATED",
    Status.FAILED: "FAILED",
    Status.DELETING: "DELETING",
    Status.DELETED: "TERMINATED",
}
EXTRA_ARGS = {"tun": ("enabled", "disabled")}  # the keys (and values) the runtime understands
_RUNTIME_KEYS = {"image", "memory", "envs", "ports", "ttl", "expires", "extraArgs"}
_SPEC_KEYS = {"runtime", "lifecycle"}


def parse_name(body: dict[str, Any]) -> tuple[str | None, str | None]:
    metadata = typed(body, "metadata", dict, "") or {}
    name = typed(metadata, "name", str, "metadata.")
    external_id = typed(metadata, "externalId", str, "metadata.")
    return (validate_name(name) if name else None), external_id


def parse_spec(body: dict[str, Any]) -> SandboxSpec:
    metadata = typed(body, "metadata", dict, "") or {}
    spec = typed(body, "spec", dict, "") or {}
    runtime = typed(spec, "runtime", dict, "spec.") or {}
    lifecycle = typed(spec, "lifecycle", dict, "spec.") or {}
    extra_args = typed(runtime, "extraArgs", dict, "spec.runtime.") or {}
    _check_extra_args(extra_args)
    memory = typed(runtime, "memory", int, "spec.runtime.")
    parse_network(spec.get("network"))  # kept verbatim in extra; validated here (400)
    extra: dict[str, Any] = {k: v for k, v in spec.items() if k not in _SPEC_KEYS}
    extra["runtime"] = {k: v for k, v in runtime.items() if k not in _RUNTIME_KEYS}
    if extra_args:
        extra["runtime"]["extraArgs"] = extra_args
    return SandboxSpec(
        image=typed(runtime, "image", str, "spec.runtime.") or "blaxel/base-image:latest",
        memory_mb=validate_memory(memory if memory is not None else 4096),
        envs=envs(typed(runtime, "envs", list, "spec.runtime.") or []),
        ports=[_port(p) for p in typed(runtime, "ports", list, "spec.runtime.") or []],
        ttl=typed(runtime, "ttl", str, "spec.runtime.") or None,
        expires=typed(runtime, "expires", str, "spec.runtime.") or None,
        policies=[_policy(p) for p in typed(lifecycle, "expirationPolicies", list, "") or []],
        labels=_labels(typed(metadata, "labels", dict, "metadata.") or {}),
        display_name=typed(metadata, "displayName", str, "metadata."),
        extra=extra,
    )


def _check_extra_args(args: dict[str, Any]) -> None:
    for key, value in args.items():
        if key not in EXTRA_ARGS:
            raise InvalidRequest(
                f"spec.runtime.extraArgs: unknown key {key!r} (known: {', '.join(EXTRA_ARGS)})"
            )
        if value not in EXTRA_ARGS[key]:
            raise InvalidRequest(
                f"spec.runtime.extraArgs.{key} must be one of {', '.join(EXTRA_ARGS[key])}"
            )


def envs(items: list[Any]) -> dict[str, str]:
    """`[{name, value}]` → a validated env map (sandboxes and jobs)."""
    found = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidRequest("spec.runtime.envs: each entry needs a name")
        value = item.get("value", "")
        found[item["name"]] = "" if value is None else str(value)
    return validate_envs(found)


def _port(item: Any) -> Port:
    if not isinstance(item, dict):
        raise InvalidRequest("spec.runtime.ports: each entry must be an object with a target")
    return Port(item.get("target"), item.get("name"), item.get("protocol") or "HTTP")


def _policy(item: Any) -> ExpirationPolicy:
    if not isinstance(item, dict):
        raise InvalidRequest("spec.lifecycle.expirationPolicies: each entry must be an object")
    value = item.get("value")
    return ExpirationPolicy(str(item.get("type")), str(value), item.get("action") or "delete")


def _labels(labels: dict[str, Any]) -> dict[str, str]:
    if not all(isinstance(v, str) for v in labels.values()):
        raise InvalidRequest("metadata.labels values must be strings")
    return labels


def render(s: Sandbox, url: str) -> dict[str, Any]:
    spec = s.spec
    runtime: dict[str, Any] = {
        **spec.extra.get("runtime", {}),
        "image": spec.image,
        "memory": spec.memory_mb,
        "envs": [{"name": k, "value": v} for k, v in spec.envs.items()],
        "ports": [_render_port(p) for p in spec.ports],
    }
    if spec.ttl:
        runtime["ttl"] = spec.ttl
    if spec.expires:
        runtime["expires"] = spec.expires
    out_spec: dict[str, Any] = {k: v for k, v in spec.extra.items() if k != "runtime"}
    if "network" in out_spec:
        out_spec["network"] = redacted(out_spec["network"])
    out_spec["runtime"] = runtime
    if spec.policies:
        out_spec["lifecycle"] = {
            "expirationPolicies": [
                {"type": p.type, "value": p.value, "action": p.action} for p in spec.policies
            ]
        }
    metadata: dict[str, Any] = {
        "name": s.name,
        "displayName": spec.display_name or s.name,
        "labels": spec.labels,
        "url": url,
        "workspace": s.workspace,
        "createdAt": iso(s.created_at),
        "updatedAt": iso(s.updated_at),
    }
    if s.external_id:
        metadata["externalId"] = s.external_id
    out: dict[str, Any] = {
        "metadata": metadata,
        "spec": out_spec,
        "status": STATUS[s.status],
        "state": "RUNNING" if s.status == Status.RUNNING else "STANDBY",
        "events": s.events,
        "errors": _errors(s),
        "lastUsedAt": iso(s.last_used_at),
    }
    deadline = s.deadline()
    if deadline is not None:
        out["expiresIn"] = max(0, int((deadline - utcnow()).total_seconds()))
    return out


def _render_port(p: Port) -> dict[str, Any]:
    port: dict[str, Any] = {"target": p.target, "protocol": p.protocol}
    if p.name:
        port["name"] = p.name
    return port


def _errors(s: Sandbox) -> list[dict[str, Any]]:
    if s.status not in (Status.FAILED, Status.STOPPED) or not s.reason:
        return []
    fatal = s.status == Status.FAILED
    return [{"code": s.status.name, "message": s.reason, "fatal": fatal, "time": iso(s.updated_at)}]

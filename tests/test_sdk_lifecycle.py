"""The official blaxel SDK against cove: create/get/list/update/delete and process.exec."""

from __future__ import annotations

import time

import pytest
from conftest import unique


def test_create_exec_delete(sdk, api):  # type: ignore[no-untyped-def]
    name = unique("sdk")
    sb = sdk.SyncSandboxInstance.create(
        {"name": name, "image": "blaxel/base-image:latest", "memory": 1024, "labels": {"k": "v"}}
    )
    assert sb.metadata.name == name
    assert sb.metadata.url.startswith("http://127.0.0.1:")
    assert sb.status == "DEPLOYED"

    result = sb.process.exec(
        {"command": "echo hi; echo oops >&2; exit 3", "wait_for_completion": True}
    )
    assert result.exit_code == 3
    assert result.status == "failed"
    assert result.stdout == "hi\n"
    assert result.stderr == "oops\n"

    sb.fs.write("/tmp/hello.txt", "hello from the sdk")
    assert sb.fs.read("/tmp/hello.txt") == "hello from the sdk"
    listing = sb.fs.ls("/tmp")
    assert "hello.txt" in [f.name for f in listing.files]
    cat = sb.process.exec({"command": "cat /tmp/hello.txt", "wait_for_completion": True})
    assert cat.stdout == "hello from the sdk"

    fetched = sdk.SyncSandboxInstance.get(name)
    assert fetched.metadata.labels["k"] == "v"
    assert name in [s.metadata.name for s in sdk.SyncSandboxInstance.list().data]

    sdk.SyncSandboxInstance.delete(name)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if api.get(f"/v0/sandboxes/{name}").status_code == 404:
            break
        time.sleep(0.05)
    assert api.get(f"/v0/sandboxes/{name}").status_code == 404
    # The name is free again.
    again = sdk.SyncSandboxInstance.create({"name": name, "memory": 512})
    assert again.metadata.name == name
    sdk.SyncSandboxInstance.delete(name)


def test_unnamed_create_gets_valid_name(sdk):  # type: ignore[no-untyped-def]
    sb = sdk.SyncSandboxInstance.create()
    assert sdk.is_valid_sandbox_name(sb.metadata.name)
    sdk.SyncSandboxInstance.delete(sb.metadata.name)


def test_taken_name_is_409_and_create_if_not_exists_returns_it(sdk):  # type: ignore[no-untyped-def]
    name = unique("dup")
    first = sdk.SyncSandboxInstance.create({"name": name, "memory": 512})
    with pytest.raises(Exception) as info:
        sdk.SyncSandboxInstance.create({"name": name, "memory": 512})
    assert "409" in str(info.value) or getattr(info.value, "status_code", None) == 409
    same = sdk.SyncSandboxInstance.create_if_not_exists({"name": name, "memory": 512})
    assert same.metadata.url == first.metadata.url
    sdk.SyncSandboxInstance.delete(name)


def test_update_ttl_and_metadata_round_trip(sdk, api):  # type: ignore[no-untyped-def]
    name = unique("upd")
    sdk.SyncSandboxInstance.create({"name": name, "memory": 512})
    sdk.SyncSandboxInstance.update_ttl(name, "2h")
    body = api.get(f"/v0/sandboxes/{name}").json()
    assert body["spec"]["runtime"]["ttl"] == "2h"
    assert 0 < body["expiresIn"] <= 7200
    from blaxel.core.sandbox.types import SandboxUpdateMetadata

    sdk.SyncSandboxInstance.update_metadata(
        name, SandboxUpdateMetadata(labels={"team": "x"}, display_name="Nice")
    )
    body = api.get(f"/v0/sandboxes/{name}").json()
    assert body["metadata"]["labels"]["team"] == "x"
    assert body["metadata"]["displayName"] == "Nice"
    sdk.SyncSandboxInstance.delete(name)

"""Compute API v1 sandboxes (seed 000): every rule, status and error code."""

from __future__ import annotations

import time
from datetime import datetime

from conftest import unique


def test_create_get_list_patch_delete(api):  # type: ignore[no-untyped-def]
    name = unique("v1")
    r = api.post(
        "/v1/sandboxes",
        json={
            "name": name,
            "tier": "xs",
            "ttl": "2h",
            "envs": {"NODE_ENV": "production"},
            "port": 3000,
        },
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"].startswith("sbox_") and body["name"] == name
    assert body["source"] == "sandbox" and body["tier"] == "xs"
    assert body["status"] in ("provisioning", "running")
    for key in ("url", "expiresAt", "createdAt", "updatedAt"):
        assert key in body
    while body["status"] != "running":
        time.sleep(0.05)
        body = api.get(f"/v1/sandboxes/{name}").json()
    assert body["url"]
    expires = datetime.fromisoformat(body["expiresAt"].replace("Z", "+00:00"))
    created = datetime.fromisoformat(body["createdAt"].replace("Z", "+00:00"))
    assert abs((expires - created).total_seconds() - 7200) < 2

    out = api.post(
        f"/v1/sandboxes/{name}/process",
        json={"command": "echo $NODE_ENV", "waitForCompletion": True},
    )
    assert out.status_code == 200 and out.json()["stdout"] == "production\n"
    put = api.put(f"/v1/sandboxes/{name}/filesystem/tmp/x.txt", json={"content": "v1 file"})
    assert put.status_code == 200
    assert api.get(f"/v1/sandboxes/{name}/filesystem/tmp/x.txt").json()["content"] == "v1 file"
    # The same object on the v0 surface.
    v0 = api.get(f"/v0/sandboxes/{name}").json()
    assert v0["metadata"]["name"] == name and v0["spec"]["runtime"]["memory"] == 2048

    patched = api.patch(f"/v1/sandboxes/{name}", json={"ttl": 3600}).json()
    later = datetime.fromisoformat(patched["expiresAt"].replace("Z", "+00:00"))
    assert abs((later - expires).total_seconds() - 3600) < 2
    assert name in [s["name"] for s in api.get("/v1/sandboxes").json()["sandboxes"]]

    assert api.delete(f"/v1/sandboxes/{name}").status_code == 204
    deadline = time.monotonic() + 30
    while api.get(f"/v1/sandboxes/{name}").status_code != 410 and time.monotonic() < deadline:
        time.sleep(0.05)
    gone = api.get(f"/v1/sandboxes/{name}")
    assert gone.status_code == 410 and gone.json()["message"]
    assert api.patch(f"/v1/sandboxes/{name}", json={"ttl": "1h"}).status_code == 410


def test_defaults(api):  # type: ignore[no-untyped-def]
    name = unique("dflt")
    body = api.post("/v1/sandboxes", json={"name": name}).json()
    assert body["tier"] == "s"
    expires = datetime.fromisoformat(body["expiresAt"].replace("Z", "+00:00"))
    created = datetime.fromisoformat(body["createdAt"].replace("Z", "+00:00"))
    assert abs((expires - created).total_seconds() - 4 * 3600) < 2
    api.delete(f"/v1/sandboxes/{name}")


def test_validation_errors(api):  # type: ignore[no-untyped-def]
    bad = [
        {},
        {"name": "a"},
        {"name": "-abc"},
        {"name": "abc-"},
        {"name": "ABC"},
        {"name": "x" * 64},
        {"name": unique(), "tier": "xxl"},
        {"name": unique(), "ttl": "forever"},
        {"name": unique(), "ttl": -5},
        {"name": unique(), "port": 3000, "ports": [3000]},
        {"name": unique(), "ports": [0]},
        {"name": unique(), "envs": {"1BAD": "x"}},
        {"name": unique(), "envs": ["A=1"]},
    ]
    for body in bad:
        r = api.post("/v1/sandboxes", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["message"]
    ok = api.post(
        "/v1/sandboxes",
        json={"name": unique("prt"), "ports": [3000, {"target": 8080, "protocol": "HTTP"}]},
    )
    assert ok.status_code == 201 and [p["target"] for p in ok.json()["ports"]] == [3000, 8080]
    api.delete(f"/v1/sandboxes/{ok.json()['name']}")


def test_conflict_and_not_found(server, api):  # type: ignore[no-untyped-def]
    name = unique("cf")
    assert api.post("/v1/sandboxes", json={"name": name, "tier": "xs"}).status_code == 201
    assert api.post("/v1/sandboxes", json={"name": name}).status_code == 409
    with server.client("ws-b") as other:
        assert other.get(f"/v1/sandboxes/{name}").status_code == 404
        assert other.delete(f"/v1/sandboxes/{name}").status_code == 404
        assert other.get(f"/v1/sandboxes/{name}/process").status_code == 404
    assert api.get("/v1/sandboxes/never-existed").status_code == 404
    api.delete(f"/v1/sandboxes/{name}")


def test_per_account_limit_is_422(fresh_server):  # type: ignore[no-untyped-def]
    fresh_server.env["COVE_MAX_SANDBOXES"] = "2"
    fresh_server.start()
    with fresh_server.client() as api:
        for i in range(2):
            assert (
                api.post("/v1/sandboxes", json={"name": f"lim-{i}", "tier": "xs"}).status_code
                == 201
            )
        r = api.post("/v1/sandboxes", json={"name": "lim-2", "tier": "xs"})
        assert r.status_code == 422 and r.json()["message"]
        assert api.get("/v1/sandboxes/lim-2").status_code == 404  # nothing half-created
        with fresh_server.client("ws-b") as other:  # the limit is per account
            assert (
                other.post("/v1/sandboxes", json={"name": "lim-0", "tier": "xs"}).status_code == 201
            )

"""Control plane v0 over raw HTTP: shapes, errors, paging, expiry (seeds 001/003/004)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from conftest import unique


def create(api, name, **runtime):  # type: ignore[no-untyped-def]
    body = {"metadata": {"name": name}, "spec": {"runtime": {"memory": 512, **runtime}}}
    return api.post("/v0/sandboxes", json=body)


def wait_gone(api, name, seconds=30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if api.get(f"/v0/sandboxes/{name}").status_code == 404:
            return True
        time.sleep(0.05)
    return False


def test_create_shape(api):  # type: ignore[no-untyped-def]
    name = unique()
    r = create(api, name, envs=[{"name": "A", "value": "1"}], ports=[{"target": 3000}])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["metadata"]["name"] == name
    assert body["metadata"]["url"]
    assert body["metadata"]["workspace"] == "ws-a"
    assert body["status"] == "DEPLOYED" and body["state"] == "RUNNING"
    assert body["spec"]["runtime"]["envs"] == [{"name": "A", "value": "1"}]
    assert body["spec"]["runtime"]["ports"] == [{"target": 3000, "protocol": "HTTP"}]
    # The sandbox API is reachable at metadata.url with the same key, env applied.
    out = api.post(
        body["metadata"]["url"] + "/process", json={"command": "echo $A", "waitForCompletion": True}
    )
    assert out.json()["stdout"] == "1\n"
    assert api.delete(f"/v0/sandboxes/{name}").json()["status"] == "DELETING"
    assert wait_gone(api, name)


def test_bad_input_is_400_in_sdk_shape(api):  # type: ignore[no-untyped-def]
    cases = [
        {"metadata": {"name": "Bad_Name"}},
        {"metadata": {"name": unique()}, "spec": {"runtime": {"memory": "lots"}}},
        {"metadata": {"name": unique()}, "spec": {"runtime": {"image": "nope/unknown:1"}}},
        {"metadata": {"name": unique()}, "spec": {"runtime": {"ttl": "soon"}}},
        {
            "metadata": {"name": unique()},
            "spec": {"lifecycle": {"expirationPolicies": [{"type": "x", "value": "1h"}]}},
        },
    ]
    for body in cases:
        r = api.post("/v0/sandboxes", json=body)
        assert r.status_code == 400, (body, r.text)
        assert isinstance(r.json()["code"], str) and r.json()["message"]
    r = api.post("/v0/sandboxes", content=b"{not json")
    assert r.status_code == 400
    r = api.post(
        "/v0/sandboxes",
        json={"metadata": {"name": unique()}, "spec": {"runtime": {"extraArgs": {"bogus": 1}}}},
    )
    assert r.status_code == 400 and "bogus" in r.json()["message"]
    assert api.get("/v0/sandboxes").json() is not None  # nothing half-created broke the list
    r = api.get("/v0/sandboxes/does-not-exist")
    assert r.status_code == 404 and r.json()["code"] == 404 and r.json()["error"]


def test_unknown_image_mentions_available(api):  # type: ignore[no-untyped-def]
    r = create(api, unique(), image="ghcr.io/acme/thing:latest")
    assert r.status_code == 400 and "not available" in r.json()["message"]


def test_list_paging_and_show_terminated(api):  # type: ignore[no-untyped-def]
    names = [unique("pg") for _ in range(3)]
    for n in names:
        assert create(api, n).status_code == 200
    seen, cursor = [], None
    for _ in range(100):  # bounded: a cursor that never ends fails below
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/v0/sandboxes", params=params).json()
        seen += [s["metadata"]["name"] for s in page["data"]]
        if not page["meta"]["hasMore"]:
            break
        cursor = page["meta"]["nextCursor"]
    else:
        pytest.fail("paging never ended")
    assert set(names) <= set(seen) and len(seen) == len(set(seen))
    api.delete(f"/v0/sandboxes/{names[0]}")
    assert wait_gone(api, names[0])
    live = api.get("/v0/sandboxes", params={"showTerminated": "false", "limit": 100}).json()["data"]
    assert names[0] not in [s["metadata"]["name"] for s in live]
    every = api.get("/v0/sandboxes", params={"showTerminated": "true", "limit": 100}).json()["data"]
    gone = [s for s in every if s["metadata"]["name"] == names[0]]
    assert gone and gone[0]["status"] == "TERMINATED"
    for n in names[1:]:
        api.delete(f"/v0/sandboxes/{n}")


def test_external_id_lookup(api):  # type: ignore[no-untyped-def]
    name = unique("ext")
    body = {
        "metadata": {"name": name, "externalId": "ext-42-" + name},
        "spec": {"runtime": {"memory": 512}},
    }
    assert api.post("/v0/sandboxes", json=body).status_code == 200
    assert api.get(f"/v0/sandboxes/by-external-id/ext-42-{name}").json()["metadata"]["name"] == name
    listed = api.get("/v0/sandboxes", params={"externalId": "ext-42-" + name}).json()
    assert [s["metadata"]["name"] for s in listed] == [name]
    assert api.get("/v0/sandboxes/by-external-id/nope").status_code == 404
    api.delete(f"/v0/sandboxes/{name}")


def test_put_replaces_spec(api):  # type: ignore[no-untyped-def]
    name = unique("put")
    sb = create(api, name, ttl="1h").json()
    sb["spec"]["runtime"].pop("ttl")
    sb["metadata"]["labels"] = {"a": "b"}
    sb["metadata"]["displayName"] = "Shown"
    r = api.put(f"/v0/sandboxes/{name}", json=sb)
    assert r.status_code == 200, r.text
    body = r.json()
    assert "ttl" not in body["spec"]["runtime"] and "expiresIn" not in body
    assert body["metadata"]["labels"] == {"a": "b"} and body["metadata"]["displayName"] == "Shown"
    api.delete(f"/v0/sandboxes/{name}")


def test_ttl_deletes_the_sandbox(api):  # type: ignore[no-untyped-def]
    name = unique("ttl")
    created = create(api, name, ttl="2s").json()
    assert wait_gone(api, name, 10)
    every = api.get("/v0/sandboxes", params={"showTerminated": "true", "limit": 1000}).json()
    gone = next(s for s in every["data"] if s["metadata"]["name"] == name)
    expired = next(e for e in gone["events"] if e["message"] == "sandbox expired")
    # Deleted by the ttl, and not before it ran out (server clock; speed is for bench/).
    born = datetime.fromisoformat(created["metadata"]["createdAt"].replace("Z", "+00:00"))
    assert datetime.fromisoformat(expired["time"]) >= born + timedelta(seconds=2)


def test_expiration_policies(api):  # type: ignore[no-untyped-def]
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    dated, idle = unique("date"), unique("idle")
    for name, policy in (
        (dated, {"type": "date", "value": soon}),
        (idle, {"type": "ttl-idle", "value": "3s"}),
    ):
        body = {
            "metadata": {"name": name},
            "spec": {
                "runtime": {"memory": 512},
                "lifecycle": {"expirationPolicies": [{**policy, "action": "delete"}]},
            },
        }
        assert api.post("/v0/sandboxes", json=body).status_code == 200
    url = api.get(f"/v0/sandboxes/{idle}").json()["metadata"]["url"]
    for _ in range(4):  # activity keeps the idle one alive past its 3 s
        api.post(url + "/process", json={"command": "true", "waitForCompletion": True})
        time.sleep(1)
    assert api.get(f"/v0/sandboxes/{dated}").status_code == 404
    assert api.get(f"/v0/sandboxes/{idle}").status_code == 200
    assert wait_gone(api, idle, 10)


def test_auth_and_tenancy(server, api):  # type: ignore[no-untyped-def]
    import httpx

    name = unique("ten")
    url = create(api, name).json()["metadata"]["url"]
    assert httpx.get(server.url + "/v0/sandboxes").status_code == 401
    assert (
        httpx.get(
            server.url + "/v0/sandboxes", headers={"Authorization": "Bearer wrong"}
        ).status_code
        == 401
    )
    xbl = {"X-Blaxel-Authorization": "Bearer key-a", "X-Blaxel-Workspace": "ws-a"}
    assert httpx.get(server.url + f"/v0/sandboxes/{name}", headers=xbl).status_code == 200
    with server.client("ws-b") as other:
        assert other.get(f"/v0/sandboxes/{name}").status_code == 404
        assert other.delete(f"/v0/sandboxes/{name}").status_code == 404
        assert other.post(url + "/process", json={"command": "true"}).status_code == 404
        assert other.get(url + "/filesystem/etc/hostname").status_code == 404
        assert name not in [s["metadata"]["name"] for s in other.get("/v0/sandboxes").json()]
    assert httpx.post(url + "/process", json={"command": "true"}).status_code == 401
    api.delete(f"/v0/sandboxes/{name}")

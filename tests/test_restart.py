"""Restarts: SIGTERM leaves nothing behind; kill -9 + restart reattaches or marks sandboxes."""

from __future__ import annotations

import signal

from server import leftovers


def test_sigterm_cleans_up_and_restart_keeps_records(fresh_server):  # type: ignore[no-untyped-def]
    fresh_server.start()
    with fresh_server.client() as api:
        r = api.post(
            "/v0/sandboxes",
            json={"metadata": {"name": "keep-me"}, "spec": {"runtime": {"memory": 256}}},
        )
        assert r.status_code == 200
        api.post(r.json()["metadata"]["url"] + "/process", json={"command": "sleep 1000"})
    assert fresh_server.stop(signal.SIGTERM) == 0
    assert leftovers(fresh_server.data_dir) == []
    fresh_server.start()
    with fresh_server.client() as api:
        body = api.get("/v0/sandboxes/keep-me").json()
        assert body["status"] == "DEACTIVATED" and body["errors"][0]["message"]
        v1 = api.get("/v1/sandboxes/keep-me").json()
        assert v1["status"] == "stopped" and v1["error"]
        assert (
            api.post(body["metadata"]["url"] + "/process", json={"command": "true"}).status_code
            == 503
        )
        assert api.delete("/v0/sandboxes/keep-me").status_code == 200


def test_kill_9_then_restart_reattaches(fresh_server):  # type: ignore[no-untyped-def]
    fresh_server.start()
    with fresh_server.client() as api:
        r = api.post(
            "/v0/sandboxes",
            json={"metadata": {"name": "survivor"}, "spec": {"runtime": {"memory": 256}}},
        )
        url = r.json()["metadata"]["url"]
        api.post(
            url + "/process", json={"command": "echo state > /tmp/state", "waitForCompletion": True}
        )
    fresh_server.stop(signal.SIGKILL)
    fresh_server.start()
    with fresh_server.client() as api:
        assert api.get("/v0/sandboxes/survivor").json()["status"] == "DEPLOYED"
        out = api.post(
            url + "/process", json={"command": "cat /tmp/state", "waitForCompletion": True}
        )
        assert out.json()["stdout"] == "state\n"
    assert fresh_server.stop() == 0
    assert leftovers(fresh_server.data_dir) == []

"""Sessions: a private preview on port 443 that serves the sandbox API itself (SDK from_session)."""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from conftest import sdk_sandbox, unique


@pytest.fixture(scope="module")
def sb(server):  # type: ignore[no-untyped-def]
    with sdk_sandbox(server, "ses") as box:
        yield box


def test_session_is_a_private_preview_on_443_with_a_token(sb, api):  # type: ignore[no-untyped-def]
    expires = datetime.now(UTC) + timedelta(hours=2)
    s = sb.sessions.create({"expires_at": expires})
    assert s.name.startswith("session-") and s.token and s.url
    raw = api.get(f"/v0/sandboxes/{sb.metadata.name}/previews/{s.name}").json()
    assert raw["spec"]["port"] == 443 and raw["spec"]["public"] is False
    assert raw["spec"]["url"] == s.url
    assert datetime.fromisoformat(raw["spec"]["expires"]) == expires
    assert s.name in [x.name for x in sb.sessions.list()]
    got = sb.sessions.get(s.name)
    assert (got.token, got.url) == (s.token, s.url)
    sb.sessions.delete(s.name)
    assert api.get(f"/v0/sandboxes/{sb.metadata.name}/previews/{s.name}").status_code == 404
    r = httpx.get(s.url + "/filesystem/tmp", headers={"X-Blaxel-Preview-Token": s.token})
    assert r.status_code == 404


def test_from_session_reaches_files_and_processes(sb):  # type: ignore[no-untyped-def]
    import blaxel.core.sandbox as sdk

    s = sb.sessions.create({"expires_at": datetime.now(UTC) + timedelta(hours=1)})
    remote = sdk.SyncSandboxInstance.from_session(s)
    remote.fs.write("/tmp/from-session.txt", "via session")
    assert sb.fs.read("/tmp/from-session.txt") == "via session"  # the same sandbox
    assert remote.fs.read("/tmp/from-session.txt") == "via session"
    assert "from-session.txt" in [f.name for f in remote.fs.ls("/tmp").files]
    done = remote.process.exec({"command": "echo hi-$((6*7))", "wait_for_completion": True})
    assert done.exit_code == 0 and done.stdout == "hi-42\n"
    name = unique("follow")
    remote.process.exec({"name": name, "command": "echo one; sleep 0.3; echo two"})
    seen: list[str] = []
    handle = remote.process.stream_logs(name, {"on_log": seen.append})
    try:
        assert remote.process.wait(name, max_wait=10000, interval=50).status == "completed"
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        handle.close()
    assert seen == ["one", "two"]


def test_from_session_watch_async(sb):  # type: ignore[no-untyped-def]
    import blaxel.core.sandbox as sdk

    s = sb.sessions.create({"expires_at": datetime.now(UTC) + timedelta(hours=1)})
    sb.process.exec({"command": "mkdir -p /tmp/watched", "wait_for_completion": True})

    async def go() -> list[tuple[str, str]]:
        remote = await sdk.SandboxInstance.from_session(s)
        events: list[tuple[str, str]] = []

        async def on_event(e):  # type: ignore[no-untyped-def]
            events.append((e.op, e.name))

        handle = remote.fs.watch("/tmp/watched", on_event)
        await asyncio.sleep(0.5)
        await remote.process.exec(
            {"command": "echo x > /tmp/watched/new.txt", "wait_for_completion": True}
        )
        for _ in range(100):
            if ("CREATE", "new.txt") in events:
                break
            await asyncio.sleep(0.05)
        handle.close()
        return events

    assert ("CREATE", "new.txt") in asyncio.run(go())


def test_session_url_needs_its_token_and_serves_nothing_else(sb, server):  # type: ignore[no-untyped-def]
    s = sb.sessions.create({"expires_at": datetime.now(UTC) + timedelta(hours=1)})
    tok = {"X-Blaxel-Preview-Token": s.token}
    assert httpx.get(s.url + "/filesystem/tmp").status_code == 401
    from server import KEYS

    key = {"X-Blaxel-Authorization": f"Bearer {KEYS['ws-a']}"}
    assert httpx.get(s.url + "/filesystem/tmp", headers=key).status_code == 401
    assert httpx.get(s.url + "/filesystem/tmp", headers=tok).status_code == 200
    assert (
        httpx.get(s.url + "/filesystem/tmp", params={"bl_preview_token": s.token}).status_code
        == 200
    )
    # Only the sandbox API: no control plane, no other sandbox, through the session URL.
    for path in ("/v0/sandboxes", "/health", "/../../v0/sandboxes", "/sbx/x/filesystem/tmp"):
        r = httpx.get(s.url + path, headers=tok)
        assert r.status_code == 404, (path, r.status_code, r.text)
    other = unique("other")
    api = server.client("ws-a")
    box = api.post(
        "/v0/sandboxes", json={"metadata": {"name": other}, "spec": {"runtime": {"memory": 512}}}
    )
    try:
        other_url = box.json()["metadata"]["url"]
        other_id = other_url.rstrip("/").rsplit("/", 1)[-1]
        # The session token of sb does not open the other sandbox's preview path.
        r = httpx.get(f"{server.url}/preview/{other_id}/{s.name}/filesystem/tmp", headers=tok)
        assert r.status_code == 404
    finally:
        api.delete(f"/v0/sandboxes/{other}")
        api.close()


def test_previews_and_tokens_survive_a_restart(fresh_server):  # type: ignore[no-untyped-def]
    fresh_server.env["COVE_PREVIEW_DOMAIN"] = "apps.test"  # host form on a configured domain
    fresh_server.start()
    base = "/v0/sandboxes/keeper/previews"
    with fresh_server.client() as api:
        spec = {"runtime": {"memory": 256}}
        assert api.post("/v0/sandboxes", json={"metadata": {"name": "keeper"}, "spec": spec})
        body = {"metadata": {"name": "session-1"}, "spec": {"port": 443, "public": False}}
        preview = api.post(base, json=body).json()
        token = api.post(base + "/session-1/tokens", json={}).json()["spec"]["token"]
    url, host_url = preview["spec"]["url"], preview["spec"]["hostUrl"]
    assert host_url.startswith("http://session-1-") and ".apps.test:" in host_url
    tok = {"X-Blaxel-Preview-Token": token}
    fresh_server.stop(signal.SIGKILL)
    fresh_server.start()
    assert httpx.get(url + "/filesystem/tmp", headers=tok).status_code == 200
    host = {"Host": host_url.split("//", 1)[1], **tok}
    assert httpx.get(fresh_server.url + "/filesystem/tmp", headers=host).status_code == 200
    with fresh_server.client() as api:
        assert api.delete("/v0/sandboxes/keeper").status_code == 200
    assert httpx.get(url + "/filesystem/tmp", headers=tok).status_code == 404
    assert fresh_server.stop() == 0

"""Previews and preview tokens: control plane (SDK + raw /v0, /v1) and traffic through them."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import sdk_sandbox, unique
from test_sandbox_ports_terminal import HTTP_APP, WS_ECHO, _serve
from websockets.sync.client import connect as ws_connect

APP_PORT = 3000


def _sh(sb, command: str) -> str:  # type: ignore[no-untyped-def]
    result = sb.process.exec({"command": command, "wait_for_completion": True})
    assert result.exit_code == 0, result.logs
    return result.stdout


@pytest.fixture(scope="module")
def sb(server):  # type: ignore[no-untyped-def]
    with sdk_sandbox(server, "prv") as box:
        _sh(box, "mkdir -p /srv/site && printf 'hello preview' > /srv/site/hello.txt")
        box.process.exec(
            {
                "name": "site",
                "command": f"cd /srv/site && exec python3 -m http.server {APP_PORT}",
                "wait_for_ports": [APP_PORT],
            }
        )
        yield box


def _previews(sb) -> str:  # type: ignore[no-untyped-def]
    return f"/v0/sandboxes/{sb.metadata.name}/previews"


def test_preview_crud_through_the_sdk(sb, api):  # type: ignore[no-untyped-def]
    from blaxel.core.client import errors

    name = unique("crud")
    p = sb.previews.create({"port": APP_PORT, "public": True, "name": name})
    assert p.name == name
    assert p.metadata.resource_name == sb.metadata.name
    assert p.metadata.resource_type == "sandbox"
    assert p.spec.port == APP_PORT and p.spec.public is True
    assert p.spec.url.endswith(f"/preview/{p.spec.url.split('/')[-2]}/{name}")
    assert sb.previews.get(name).spec.url == p.spec.url
    assert name in [x.name for x in sb.previews.list()]
    listed = api.get(_previews(sb))
    assert isinstance(listed.json(), list)  # a bare array
    with pytest.raises(errors.UnexpectedStatus) as taken:
        sb.previews.create({"port": APP_PORT, "name": name})
    assert taken.value.status_code == 409
    with pytest.raises(errors.UnexpectedStatus) as missing:
        sb.previews.get(unique("nope"))
    assert missing.value.status_code == 404
    # createIfNotExists: GET answers 404, then the SDK creates (shorthand name preview-<port>).
    made = sb.previews.create_if_not_exists({"port": 4321})
    assert made.name == "preview-4321" and made.spec.public is False
    assert sb.previews.create_if_not_exists({"port": 4321}).spec.url == made.spec.url
    # PUT replaces the spec.
    body = {
        "metadata": {"name": name},
        "spec": {"port": 8080, "public": False, "prefixUrl": "myapp", "customDomain": "a.example"},
    }
    put = api.put(f"{_previews(sb)}/{name}", json=body).json()
    assert put["spec"]["port"] == 8080 and put["spec"]["public"] is False
    assert (put["spec"]["prefixUrl"], put["spec"]["customDomain"]) == ("myapp", "a.example")
    deleted = sb.previews.delete(name)
    assert deleted.metadata.name == name
    assert api.get(f"{_previews(sb)}/{name}").status_code == 404
    sb.previews.delete("preview-4321")


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"metadata": {"name": "x1"}, "spec": {"port": "80"}}, "spec.port"),
        ({"metadata": {"name": "x2"}, "spec": {"port": 0}}, "spec.port"),
        ({"metadata": {"name": "Bad_Name"}, "spec": {"port": 80}}, "invalid"),
        ({"metadata": {"name": "x3"}, "spec": {"port": 80, "public": "yes"}}, "spec.public"),
        (
            {"metadata": {"name": "x4"}, "spec": {"port": 80, "responseHeaders": {"a": 1}}},
            "spec.responseHeaders",
        ),
        ({"metadata": {"name": "x5"}, "spec": {"port": 80, "ttl": "soon"}}, "spec.ttl"),
        ({"metadata": {"name": "x6"}, "spec": {"port": 80, "expires": "later"}}, "spec.expires"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_preview_input_is_a_clear_400(sb, api, body, needle):  # type: ignore[no-untyped-def]
    r = api.post(_previews(sb), json=body)
    assert r.status_code == 400, r.text
    assert needle in r.json()["message"] and r.json()["code"] == 400


def test_unknown_sandbox_or_token_target_is_404(sb, api, server):  # type: ignore[no-untyped-def]
    r = api.post("/v0/sandboxes/no-such-box/previews", json={"spec": {"port": 80}})
    assert r.status_code == 404 and "no-such-box" in r.json()["message"]
    assert api.get(f"{_previews(sb)}/nope/tokens").status_code == 404
    past = {"spec": {"expiresAt": "2000-01-01T00:00:00Z"}}
    name = unique("tk")
    api.post(_previews(sb), json={"metadata": {"name": name}, "spec": {"port": 80}})
    r = api.post(f"{_previews(sb)}/{name}/tokens", json=past)
    assert r.status_code == 400 and "future" in r.json()["message"]
    bad = api.post(f"{_previews(sb)}/{name}/tokens", json={"spec": {"expiresAt": "tomorrow"}})
    assert bad.status_code == 400
    assert api.delete(f"{_previews(sb)}/{name}/tokens/nope").status_code == 404
    assert httpx.get(api.base_url.join(f"{_previews(sb)}")).status_code == 401  # no API key
    with server.client("ws-b") as other:  # another workspace sees neither sandbox nor previews
        assert other.get(_previews(sb)).status_code == 404
        assert other.post(_previews(sb), json={"spec": {"port": 80}}).status_code == 404


def test_public_preview_by_path_and_by_host(sb, server):  # type: ignore[no-untyped-def]
    p = sb.previews.create({"port": APP_PORT, "public": True, "name": unique("pub")})
    r = httpx.get(p.spec.url + "/hello.txt")
    assert (r.status_code, r.text) == (200, "hello preview")
    raw = httpx.get(
        f"{server.url}/v0/sandboxes/{sb.metadata.name}/previews/{p.name}",
        headers={"Authorization": f"Bearer {_key()}"},
    ).json()
    host_url = raw["spec"]["hostUrl"]
    host = urlsplit(host_url).netloc
    assert host.split(":")[0].endswith(".localhost")
    # The host form is served at /; no DNS needed: send the Host header to this server.
    r = httpx.get(server.url + "/hello.txt", headers={"Host": host})
    assert (r.status_code, r.text) == (200, "hello preview")
    assert httpx.get(server.url + "/hello.txt").status_code == 404  # no Host: not a preview
    # A deleted preview stops answering at once.
    sb.previews.delete(p.name)
    assert httpx.get(p.spec.url + "/hello.txt").status_code == 404
    assert httpx.get(server.url + "/hello.txt", headers={"Host": host}).status_code == 404


def _key() -> str:
    from server import KEYS

    return KEYS["ws-a"]


def test_private_preview_needs_a_valid_token(sb):  # type: ignore[no-untyped-def]
    p = sb.previews.create({"port": APP_PORT, "name": unique("priv")})
    url = p.spec.url + "/hello.txt"
    denied = httpx.get(url)
    assert denied.status_code == 401 and "token" in denied.json()["error"]
    # The API key is not a preview token.
    assert httpx.get(url, headers={"X-Blaxel-Authorization": f"Bearer {_key()}"}).status_code == 401
    t1 = p.tokens.create(datetime.now(UTC) + timedelta(hours=1))
    t2 = p.tokens.create(datetime.now(UTC) + timedelta(hours=1))
    assert t1.value != t2.value
    assert httpx.get(url, headers={"X-Blaxel-Preview-Token": t1.value}).text == "hello preview"
    assert httpx.get(url, params={"bl_preview_token": t2.value}).status_code == 200
    assert httpx.get(url, headers={"X-Blaxel-Preview-Token": "wrong"}).status_code == 401
    assert {t.value for t in p.tokens.list()} == {t1.value, t2.value}
    p.tokens.delete(t1.value)  # by value (the SDK's own tests do this)
    assert httpx.get(url, headers={"X-Blaxel-Preview-Token": t1.value}).status_code == 401
    p.tokens.delete(t2.name)  # by name
    assert httpx.get(url, params={"bl_preview_token": t2.value}).status_code == 401
    # (the SDK's tokens.list() raises on an empty list; the wire answer is a bare [])
    raw = httpx.get(
        p.spec.url.split("/preview/")[0]
        + f"/v0/sandboxes/{sb.metadata.name}/previews/{p.name}/tokens",
        headers={"Authorization": f"Bearer {_key()}"},
    )
    assert raw.json() == []
    # A token of another preview does not open this one.
    other = sb.previews.create({"port": APP_PORT, "name": unique("oth")})
    t3 = other.tokens.create(datetime.now(UTC) + timedelta(hours=1))
    assert httpx.get(url, headers={"X-Blaxel-Preview-Token": t3.value}).status_code == 401
    assert (
        httpx.get(
            other.spec.url + "/hello.txt", headers={"X-Blaxel-Preview-Token": t3.value}
        ).status_code
        == 200
    )


def test_token_stops_working_when_it_expires(sb, api):  # type: ignore[no-untyped-def]
    p = sb.previews.create({"port": APP_PORT, "name": unique("exp")})
    expires = datetime.now(UTC) + timedelta(seconds=3)
    token = p.tokens.create(expires)
    assert token.expires_at.timestamp() == pytest.approx(expires.timestamp(), abs=0.01)
    url = p.spec.url + "/hello.txt"
    assert httpx.get(url, headers={"X-Blaxel-Preview-Token": token.value}).status_code == 200
    time.sleep(max(0.0, expires.timestamp() - time.time()) + 0.05)
    assert httpx.get(url, headers={"X-Blaxel-Preview-Token": token.value}).status_code == 401
    listed = api.get(f"{_previews(sb)}/{p.name}/tokens").json()
    assert listed[0]["spec"]["expired"] is True


def test_response_headers_and_cors_preflight(sb):  # type: ignore[no-untyped-def]
    cors = {
        "Access-Control-Allow-Origin": "http://app.example",
        "Access-Control-Allow-Headers": "X-Blaxel-Preview-Token, Content-Type",
        "X-Extra": "yes",
    }
    p = sb.previews.create(
        {
            "metadata": {"name": unique("cors")},
            "spec": {"port": APP_PORT, "public": False, "responseHeaders": cors},
        }
    )
    url = p.spec.url + "/hello.txt"
    pre = httpx.options(
        url, headers={"Origin": "http://app.example", "Access-Control-Request-Method": "GET"}
    )
    assert pre.status_code == 204  # preflights carry no token
    assert pre.headers["access-control-allow-origin"] == "http://app.example"
    assert "X-Blaxel-Preview-Token" in pre.headers["access-control-allow-headers"]
    token = p.tokens.create(datetime.now(UTC) + timedelta(hours=1))
    r = httpx.get(url, headers={"X-Blaxel-Preview-Token": token.value})
    assert r.status_code == 200 and r.headers["x-extra"] == "yes"
    assert r.headers["access-control-allow-origin"] == "http://app.example"
    denied = httpx.get(url)  # errors carry them too, so the browser can read the 401
    assert denied.status_code == 401 and denied.headers["x-extra"] == "yes"


def test_request_headers_are_added_and_token_not_forwarded(sb):  # type: ignore[no-untyped-def]
    _serve(sb, HTTP_APP, 8201, unique("hdr"))
    p = sb.previews.create(
        {
            "metadata": {"name": unique("rqh")},
            "spec": {
                "port": 8201,
                "public": False,
                "requestHeaders": {"X-Blaxel-Authorization": "injected"},
            },
        }
    )
    token = p.tokens.create(datetime.now(UTC) + timedelta(hours=1))
    r = httpx.post(p.spec.url + "/echo?a=1&bl_preview_token=" + token.value, content=b"body")
    assert r.status_code == 201 and r.content == b"body"
    assert r.headers["x-auth"] == "injected"
    assert r.headers["x-path"] == "/echo?a=1"  # the token query parameter stays outside


def test_502_when_nothing_listens(sb):  # type: ignore[no-untyped-def]
    p = sb.previews.create({"port": 3999, "public": True, "name": unique("idle")})
    r = httpx.get(p.spec.url + "/", timeout=30)
    assert r.status_code == 502
    assert "3999" in r.json()["error"]


def test_streaming_and_websocket_pass_through(sb, server):  # type: ignore[no-untyped-def]
    _sh(sb, "rm -f /tmp/go")
    _serve(sb, HTTP_APP, 8202, unique("stream"))
    _serve(sb, WS_ECHO, 8203, unique("ws"))
    p = sb.previews.create({"port": 8202, "public": True, "name": unique("st")})
    with httpx.stream("GET", p.spec.url + "/s", timeout=30) as resp:
        chunks = resp.iter_raw()
        assert next(chunks) == b"first"  # arrives while the app still holds the rest back
        _sh(sb, "touch /tmp/go")
        assert b"".join(chunks) == b"second"
    w = sb.previews.create({"port": 8203, "name": unique("ws")})
    token = w.tokens.create(datetime.now(UTC) + timedelta(hours=1))
    ws_url = w.spec.url.replace("http://", "ws://") + "/chan"
    with ws_connect(ws_url, additional_headers={"X-Blaxel-Preview-Token": token.value}) as ws:
        ws.send("ping")
        assert ws.recv(timeout=10) == "/chan ping"
    with pytest.raises(Exception) as denied, ws_connect(ws_url):
        pass
    assert "401" in str(denied.value)


def test_fetch_reaches_a_port(sb):  # type: ignore[no-untyped-def]
    r = sb.fetch(APP_PORT, "/hello.txt")
    assert (r.status_code, r.text) == (200, "hello preview")


def test_deleting_the_sandbox_removes_previews_and_tokens(server, api):  # type: ignore[no-untyped-def]
    import blaxel.core.sandbox as sdk

    name = unique("gone")
    box = sdk.SyncSandboxInstance.create({"name": name, "memory": 512})
    box.process.exec(
        {"command": "cd /tmp && exec python3 -m http.server 3000", "wait_for_ports": [3000]}
    )
    pub = box.previews.create({"port": 3000, "public": True, "name": "web"})
    priv = box.previews.create({"port": 3000, "name": "app"})
    token = priv.tokens.create(datetime.now(UTC) + timedelta(hours=1))
    assert httpx.get(pub.spec.url + "/").status_code == 200
    sdk.SyncSandboxInstance.delete(name)
    assert httpx.get(pub.spec.url + "/").status_code == 404
    assert (
        httpx.get(priv.spec.url + "/", headers={"X-Blaxel-Preview-Token": token.value}).status_code
        == 404
    )
    for _ in range(200):  # teardown runs in the background; the name frees when it is done
        if api.get(f"/v0/sandboxes/{name}").status_code == 404:
            break
        time.sleep(0.05)
    assert api.get(f"/v0/sandboxes/{name}/previews").status_code == 404
    sdk.SyncSandboxInstance.create({"name": name, "memory": 512})
    try:
        # The name is reused; the old previews are not (SDK list() raises on [], so raw).
        assert api.get(f"/v0/sandboxes/{name}/previews").json() == []
    finally:
        sdk.SyncSandboxInstance.delete(name)


def test_v1_previews(api):  # type: ignore[no-untyped-def]
    name = unique("v1p")
    assert api.post("/v1/sandboxes", json={"name": name, "tier": "xs"}).status_code == 201
    try:
        r = api.post(f"/v1/sandboxes/{name}/previews", json={"port": 3000})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["port"] == 3000 and body["url"].endswith(f"/{body['name']}")
        listed = api.get(f"/v1/sandboxes/{name}/previews").json()["previews"]
        assert [p["url"] for p in listed] == [body["url"]]
        bad = api.post(f"/v1/sandboxes/{name}/previews", json={"port": "x"})
        assert bad.status_code == 400 and bad.json()["statusCode"] == 400
        assert (
            api.post(f"/v1/sandboxes/{name}/previews", json={"port": 1, "x": 1}).status_code == 400
        )
        assert api.post(f"/v1/sandboxes/{name}/previews", json={"port": 3000}).status_code == 409
        assert api.get("/v1/sandboxes/nope-nope/previews").status_code == 404
    finally:
        api.delete(f"/v1/sandboxes/{name}")
    assert api.get(f"/v1/sandboxes/{name}/previews").status_code in (404, 410)


HEADERS_APP = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        body = ("%s\n%s" % (self.path, self.headers)).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.send_header("set-cookie", "app=1; Path=/")
        self.end_headers()
        self.wfile.write(body)
ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"""


def test_browser_link_with_token_sets_a_cookie(sb, server):  # type: ignore[no-untyped-def]
    _serve(sb, HEADERS_APP, 8204, unique("hdrs"))
    p = sb.previews.create({"port": 8204, "name": unique("ck")})
    token = p.tokens.create(datetime.now(UTC) + timedelta(hours=1))
    prefix = urlsplit(p.spec.url).path
    with httpx.Client() as browser:
        first = browser.get(p.spec.url + "/page", params={"bl_preview_token": token.value})
        assert first.status_code == 200
        cookies = first.headers.get_list("set-cookie")
        assert f"bl_preview_token={token.value}; Path={prefix}; HttpOnly; SameSite=Lax" in cookies
        assert "app=1; Path=/" in cookies  # the app's own cookies still pass
        # The page's next requests carry only the cookie; the app never sees the token.
        browser.cookies.set("other", "x", path="/")
        nxt = browser.get(p.spec.url + "/asset.js")
        assert nxt.status_code == 200 and nxt.text.startswith("/asset.js\n")
        assert token.value not in nxt.text and "bl_preview_token" not in nxt.text
        assert "other=x" in nxt.text
        with_header = browser.get(
            p.spec.url + "/h", headers={"X-Blaxel-Preview-Token": token.value}
        )
        assert token.value not in with_header.text
    p.tokens.delete(token.name)
    stale = httpx.get(p.spec.url + "/", cookies={"bl_preview_token": token.value})
    assert stale.status_code == 401
    assert token.value not in server.log()  # token values are never logged

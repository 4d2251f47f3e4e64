"""Real web apps in a sandbox opened through their previews in headless Chromium (issue 6): a
Node HTTP server with a WebSocket, and a Vite dev server installed from npm inside the sandbox
whose hot module replacement runs over the preview (Chromium driven by tests/browser.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from browser import assert_png, texts
from conftest import own_server, unique
from registry import npm_install, registry_mirrors
from server import CoveServer

# A Node app with Node's own modules only: a page, a JSON API and a WebSocket echo on one port.
# The page finds its API and socket relative to its own URL, so it works at / and under a prefix.
NODE_APP = r"""
const http = require("http");
const crypto = require("crypto");
const PAGE = `<!doctype html><html><head><title>cove node</title></head><body>
<h1 id="title">node in cove</h1><p id="api">waiting</p><p id="ws">waiting</p>
<script>
const base = location.pathname.replace(/\\/$/, "");
fetch(base + "/api/info").then((r) => r.json())
  .then((j) => { document.getElementById("api").textContent = "api:" + j.runtime; })
  .catch((e) => { document.getElementById("api").textContent = "api-error:" + e; });
const ws = new WebSocket(location.origin.replace(/^http/, "ws") + base + "/ws");
ws.onopen = () => ws.send("ping");
ws.onmessage = (e) => { document.getElementById("ws").textContent = "ws:" + e.data; };
ws.onerror = () => { document.getElementById("ws").textContent = "ws-error"; };
</script></body></html>`;
const server = http.createServer((req, res) => {
  if (req.url.startsWith("/api/info")) {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ runtime: "node " + process.version }));
    return;
  }
  res.writeHead(200, { "content-type": "text/html" });
  res.end(PAGE);
});
// RFC 6455, just enough: one short masked text frame per read, answered with one text frame.
server.on("upgrade", (req, socket) => {
  const accept = crypto.createHash("sha1")
    .update(req.headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
    .digest("base64");
  socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" +
    "Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n");
  socket.on("data", (buf) => {
    if ((buf[0] & 15) === 8) { socket.end(); return; }
    const len = buf[1] & 127, mask = buf.subarray(2, 6);
    const data = Buffer.from(buf.subarray(6, 6 + len).map((b, i) => b ^ mask[i % 4]));
    const reply = Buffer.from("echo:" + data.toString() + " from node " + process.version);
    socket.write(Buffer.concat([Buffer.from([0x81, reply.length]), reply]));
  });
});
server.listen(Number(process.argv[2]), "0.0.0.0");
"""

# A Vite project. main.js accepts hot updates of msg.js and sends a custom event over the HMR
# WebSocket (buffered by Vite's client until the socket is open); the plugin answers it. No
# server.hmr settings: Vite's client derives its socket URL from the page's own URL (the
# preview's host and port), and cove presents the upstream as localhost:5173, which passes
# Vite's host check. host 0.0.0.0: `localhost` may bind ::1 only, and previews dial 127.0.0.1.
VITE_FILES = {
    "index.html": """<!doctype html><html><head><title>cove vite</title></head><body>
<h1 id="title">vite in cove</h1><p id="msg">loading</p><p id="pong">waiting</p>
<script type="module" src="/main.js"></script></body></html>
""",
    "main.js": """import { text } from "./msg.js";
const show = (id, value) => { document.getElementById(id).textContent = value; };
show("msg", text);
if (import.meta.hot) {
  import.meta.hot.accept("./msg.js", (mod) => mod && show("msg", mod.text));
  import.meta.hot.on("cove:pong", (data) => show("pong", data.text));
  import.meta.hot.send("cove:ping", { text: "hello" });
}
""",
    "msg.js": 'export const text = "msg:v1";\n',
    "vite.config.mjs": """export default {
  clearScreen: false,
  server: { host: "0.0.0.0", port: 5173, strictPort: true },
  plugins: [{
    name: "cove-ping",
    configureServer(server) {
      server.ws.on("connection", () => console.log("cove: hmr client connected"));
      server.ws.on("cove:ping", (data, client) => {
        console.log("cove: ping " + data.text);
        client.send("cove:pong", { text: "pong:" + data.text });
      });
    },
  }],
};
""",
}
VITE = "vite@5.4.21"  # the 5.x line runs on the image's Node 18 (vite 6+ needs Node 20)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def apps_server() -> Iterator[CoveServer]:
    """A server whose sandboxes may reach this host's registry mirror (see registry.py)."""
    with own_server(COVE_EGRESS_ALLOW_NETS=registry_mirrors()) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(apps_server: CoveServer) -> Iterator[httpx.Client]:
    with apps_server.client("ws-a") as c:
        yield c


@contextlib.contextmanager
def sandbox(client: httpx.Client, spec: dict[str, Any]) -> Iterator[tuple[str, str]]:
    name = unique("app")
    r = client.post("/v0/sandboxes", json={"metadata": {"name": name}, "spec": spec})
    assert r.status_code == 200, r.text
    try:
        yield name, r.json()["metadata"]["url"]
    finally:
        client.delete(f"/v0/sandboxes/{name}")


def write(client: httpx.Client, url: str, path: str, content: str) -> None:
    r = client.put(f"{url}/filesystem/{path}", json={"content": content})
    assert r.is_success, r.text


def start(client: httpx.Client, url: str, body: dict[str, Any], port: int) -> None:
    r = client.post(f"{url}/process", json={**body, "waitForPorts": [port]})
    assert r.status_code == 200 and r.json()["status"] == "running", r.text


@pytest.fixture(scope="module")
def node_app(client: httpx.Client) -> Iterator[tuple[str, str]]:
    with sandbox(client, {"runtime": {"memory": 1024}}) as (name, url):
        write(client, url, "/srv/app.js", NODE_APP)
        start(client, url, {"name": "node", "command": "node /srv/app.js 3000"}, 3000)
        yield name, url


@pytest.fixture(scope="module")
def vite_app(client: httpx.Client) -> Iterator[tuple[str, str]]:
    spec = {"runtime": {"memory": 2048}, "network": {"allowedDomains": ["registry.npmjs.org"]}}
    with sandbox(client, spec) as (name, url):
        installed = npm_install(client, url, "/app", [VITE])
        assert installed["exitCode"] == 0, installed["logs"][-3000:]  # the registry's answer
        for path, content in VITE_FILES.items():
            write(client, url, "/app/" + path, content)
        command = "node node_modules/vite/bin/vite.js"
        start(client, url, {"name": "vite", "command": command, "workingDir": "/app"}, 5173)
        yield name, url


def preview(client: httpx.Client, sandbox: str, port: int, public: bool) -> dict[str, Any]:
    body = {"metadata": {"name": unique("p")}, "spec": {"port": port, "public": public}}
    r = client.post(f"/v0/sandboxes/{sandbox}/previews", json=body)
    assert r.status_code == 200, r.text
    return r.json()


# -- Node ------------------------------------------------------------------------------------


def test_node_app_with_websocket_through_a_public_preview(client, node_app, browser, tmp_path):  # type: ignore[no-untyped-def]
    p = preview(client, node_app[0], 3000, public=True)
    for url in (p["spec"]["url"] + "/", p["spec"]["hostUrl"] + "/"):  # path and host forms
        page = browser.open(url)
        assert page["status"] == 200 and "node in cove" in page["text"], page
        api, ws = browser.wait(texts(("api", "ws")), lambda v: "waiting" not in v)
        assert api.startswith("api:node v18."), api
        assert ws.startswith("ws:echo:ping from node v18."), ws  # the WebSocket round trip
        assert_png(browser.screenshot(tmp_path / "node.png"))


def test_private_node_preview_in_a_browser(client, node_app, browser):  # type: ignore[no-untyped-def]
    name = node_app[0]
    p = preview(client, name, 3000, public=False)
    url = p["spec"]["url"] + "/"
    page = browser.open(url)
    assert page["status"] == 401 and "private" in page["text"], page
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    tokens = f"/v0/sandboxes/{name}/previews/{p['metadata']['name']}/tokens"
    token = client.post(tokens, json={"spec": {"expiresAt": expires}}).json()["spec"]["token"]
    # The link carries the token; the page's fetch and WebSocket use the cookie it set.
    page = browser.open(url + "?bl_preview_token=" + token)
    assert page["status"] == 200, page
    api, ws = browser.wait(texts(("api", "ws")), lambda v: "waiting" not in v)
    assert api.startswith("api:node") and ws.startswith("ws:echo:ping"), (api, ws)
    assert client.delete(f"{tokens}/{token}").status_code == 200
    page = browser.open(url)  # the cookie is still sent; the token behind it is gone
    assert page["status"] == 401, page


# -- Vite ------------------------------------------------------------------------------------


def _vite_logs(client: httpx.Client, url: str) -> str:
    return client.get(f"{url}/process/vite/logs").json()["logs"]


def test_vite_dev_server_and_hot_reload_through_a_preview(client, vite_app, browser, tmp_path):  # type: ignore[no-untyped-def]
    name, url = vite_app
    p = preview(client, name, 5173, public=True)
    page = browser.open(p["spec"]["hostUrl"] + "/")  # Vite serves at /: the host form
    assert page["status"] == 200 and "vite in cove" in page["text"], page
    msg, pong = browser.wait(texts(("msg", "pong")), lambda v: v[1] != "waiting")
    assert msg == "msg:v1"  # main.js ran, its import resolved through the preview
    assert pong == "pong:hello"  # a round trip over Vite's HMR WebSocket
    assert_png(browser.screenshot(tmp_path / "vite.png"))
    loaded = browser.eval("performance.timeOrigin")
    # An edit through cove's file API: Vite's watcher sees it and pushes a hot update.
    write(client, url, "/app/msg.js", 'export const text = "msg:v2";\n')
    assert browser.wait(texts(("msg",)), lambda v: v[0] == "msg:v2") == ["msg:v2"]
    assert browser.eval("performance.timeOrigin") == loaded  # updated in place, not reloaded
    logs = _vite_logs(client, url)
    assert "cove: hmr client connected" in logs and "cove: ping hello" in logs, logs
    assert "hmr update" in logs, logs


def test_vite_through_a_private_preview(client, vite_app, browser):  # type: ignore[no-untyped-def]
    name, _ = vite_app
    p = preview(client, name, 5173, public=False)
    host_url = p["spec"]["hostUrl"] + "/"
    assert browser.open(host_url)["status"] == 401
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    tokens = f"/v0/sandboxes/{name}/previews/{p['metadata']['name']}/tokens"
    token = client.post(tokens, json={"spec": {"expiresAt": expires}}).json()["spec"]["token"]
    page = browser.open(host_url + "?bl_preview_token=" + token)
    assert page["status"] == 200, page
    # Module imports and the HMR socket carry the cookie the link set.
    _, pong = browser.wait(texts(("msg", "pong")), lambda v: v[1] != "waiting")
    assert pong == "pong:hello"

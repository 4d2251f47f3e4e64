"""Ports, port monitors, the /port/{n} proxy (HTTP + WebSocket) and the terminal WebSocket."""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import sdk_sandbox, unique
from server import KEYS
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

HTTP_APP = r"""
import os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(201)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-auth", self.headers.get("x-blaxel-authorization", "none"))
        self.send_header("x-path", self.path)
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.send_response(200)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        def chunk(b):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b)); self.wfile.flush()
        chunk(b"first")
        while not os.path.exists("/tmp/go"):
            time.sleep(0.01)
        chunk(b"second")
        self.wfile.write(b"0\r\n\r\n")
ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"""

# A WebSocket echo (text frames come back as "<path> <text>"); a plain GET gets a page that
# opens <page>/ws and shows the echo of "ping" (the preview browser tests).
WS_ECHO = r"""
import asyncio, base64, hashlib, struct, sys
PAGE = b'''<!doctype html><html><body><h1 id="title">cove preview</h1><p id="out">waiting</p>
<script>
const ws = new WebSocket(location.href.split("?")[0].replace(/^http/, "ws").replace(/\/$/, "") + "/ws");
ws.onopen = () => ws.send("ping");
ws.onmessage = (e) => { document.getElementById("out").textContent = "ws:" + e.data; };
ws.onerror = () => { document.getElementById("out").textContent = "ws-error"; };
</script></body></html>'''
async def handle(r, w):
    head = await r.readuntil(b"\r\n\r\n")
    if b"upgrade: websocket" not in head.lower():
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n" % len(PAGE) + PAGE)
        await w.drain(); w.close(); return
    key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n")
           if l.lower().startswith(b"sec-websocket-key")][0]
    acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    path = head.split(b" ")[1]
    w.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n")
    while True:
        b0, b1 = await r.readexactly(2)
        n = b1 & 127
        if n == 126: n = struct.unpack(">H", await r.readexactly(2))[0]
        elif n == 127: n = struct.unpack(">Q", await r.readexactly(8))[0]
        mask = await r.readexactly(4) if b1 & 128 else b"\0\0\0\0"
        data = bytes(c ^ mask[i % 4] for i, c in enumerate(await r.readexactly(n)))
        op = b0 & 15
        if op == 8:
            w.write(b"\x88\x00"); await w.drain(); w.close(); return
        reply = path + b" " + data if op == 1 else data
        size = bytes([len(reply)]) if len(reply) < 126 else b"\x7e" + struct.pack(">H", len(reply))
        w.write(bytes([0x80 | op]) + size + reply); await w.drain()
async def main():
    server = await asyncio.start_server(handle, "0.0.0.0", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""


@pytest.fixture(scope="module")
def sb(server):  # type: ignore[no-untyped-def]
    with sdk_sandbox(server, "net") as box:
        yield box


def _url(sb) -> str:  # type: ignore[no-untyped-def]
    return "/sbx/" + sb.metadata.url.rstrip("/").rsplit("/", 1)[-1]


def _serve(sb, script: str, port: int, name: str):  # type: ignore[no-untyped-def]
    """Start a python server in the sandbox (script sent over stdin) and wait for its port."""
    path = f"/tmp/{name}.py"
    sb.process.exec({"name": name + "-w", "command": f"cat > {path}", "stdin": True})
    sb.process.write_stdin(name + "-w", script)
    sb.process.close_stdin(name + "-w")
    sb.process.wait(name + "-w", max_wait=10000, interval=20)
    r = sb.process.exec(
        {"name": name, "command": f"python3 {path} {port}", "wait_for_ports": [port]}
    )
    assert r.status == "running"
    return r


def test_ports_of_a_process_and_wait_for_ports(sb, api):  # type: ignore[no-untyped-def]
    srv = sb.process.exec(
        {
            "name": unique("web"),
            "command": "cd /tmp && exec python3 -m http.server 8000",
            "wait_for_ports": [8000],
        }
    )
    for ref in (srv.pid, srv.name):
        body = api.get(f"{_url(sb)}/network/process/{ref}/ports").json()
        assert body["pid"] == int(srv.pid)
        assert [p["port"] for p in body["ports"]] == [8000]
    idle = sb.process.exec({"command": "sleep 30"})
    assert api.get(f"{_url(sb)}/network/process/{idle.pid}/ports").json()["ports"] == []
    # Children of the process count (the port belongs to its session).
    child = sb.process.exec(
        {"command": "python3 -m http.server 8009 & wait", "wait_for_ports": [8009]}
    )
    ports = api.get(f"{_url(sb)}/network/process/{child.pid}/ports").json()["ports"]
    assert [p["port"] for p in ports] == [8009]
    assert api.get(f"{_url(sb)}/network/process/nope/ports").status_code == 404
    for p in (srv, idle, child):
        sb.process.kill(p.pid)


def test_fetch_proxies_http_and_streams(sb, api):  # type: ignore[no-untyped-def]
    _serve(sb, HTTP_APP, 8100, unique("app"))
    payload = bytes(range(256)) * 4096  # 1 MiB, binary
    resp = sb.fetch(8100, "/echo?x=1", "POST", content=payload)
    assert resp.status_code == 201 and resp.content == payload
    assert resp.headers["x-path"] == "/echo?x=1"
    assert resp.headers["x-auth"] == "none"  # the cove credential stays outside
    # Streaming passes through unbuffered: "first" arrives while the server still waits.
    with api.stream("GET", f"{_url(sb)}/port/8100/stream") as streamed:
        chunks = streamed.iter_raw()
        assert next(chunks) == b"first"
        sb.process.exec({"command": "touch /tmp/go", "wait_for_completion": True})
        assert b"".join(chunks) == b"second"


def test_proxy_errors(sb, api):  # type: ignore[no-untyped-def]
    resp = api.get(f"{_url(sb)}/port/8999/")
    assert resp.status_code == 502 and "8999" in resp.json()["error"]
    assert api.get(f"{_url(sb)}/port/0/").status_code == 400
    assert api.get(f"{_url(sb)}/port/70000/x").status_code == 400


def test_websocket_through_the_port_proxy(server, sb):  # type: ignore[no-untyped-def]
    _serve(sb, WS_ECHO, 8200, unique("ws"))
    url = server.url.replace("http", "ws") + f"{_url(sb)}/port/8200/chat?room=1"
    headers = {"X-Blaxel-Authorization": f"Bearer {KEYS['ws-a']}", "X-Blaxel-Workspace": "ws-a"}
    with ws_connect(url, additional_headers=headers) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "/chat?room=1 hello"
        ws.send(b"\x00\x01")
        assert ws.recv(timeout=10) == b"\x00\x01"


def _terminal(server, sb, query: str):  # type: ignore[no-untyped-def]
    url = server.url.replace("http", "ws") + f"{_url(sb)}/terminal/ws?{query}"
    headers = {"X-Blaxel-Authorization": f"Bearer {KEYS['ws-a']}", "X-Blaxel-Workspace": "ws-a"}
    return ws_connect(url, additional_headers=headers)


def _read_until(ws, needle: str) -> str:  # type: ignore[no-untyped-def]
    seen = ""
    deadline = time.monotonic() + 15
    while needle not in seen and time.monotonic() < deadline:
        msg = json.loads(ws.recv(timeout=15))
        assert msg["type"] == "output"
        seen += msg["data"]
    return seen


def test_terminal_websocket(server, sb, api):  # type: ignore[no-untyped-def]
    with _terminal(server, sb, "cols=100&rows=30&workingDir=/tmp") as ws:
        ws.send(json.dumps({"type": "input", "data": "stty size; pwd; echo $((6*7))x\r"}))
        out = _read_until(ws, "42x")
        assert "30 100" in out and "/tmp" in out
        ws.send(json.dumps({"type": "resize", "cols": 120, "rows": 40}))
        ws.send(json.dumps({"type": "input", "data": "stty size\r"}))
        assert "40 120" in _read_until(ws, "40 120")
        ws.send(json.dumps({"type": "input", "data": "exit\r"}))
        with pytest.raises(ConnectionClosed):  # the socket closes when the shell exits
            for _ in range(10_000):  # bounded: ends with the shell, or the test fails
                ws.recv(timeout=15)
    page = api.get(f"{_url(sb)}/terminal")
    assert page.status_code == 200 and "terminal/ws" in page.text


def test_terminal_rejects_bad_input_and_auth(server, sb):  # type: ignore[no-untyped-def]
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as info:
        _terminal(server, sb, "shell=bash;rm")
    assert info.value.response.status_code == 400
    url = server.url.replace("http", "ws") + f"{_url(sb)}/terminal/ws"
    with pytest.raises(InvalidStatus) as info:
        ws_connect(url)
    assert info.value.response.status_code == 401


def _callback_server() -> tuple[ThreadingHTTPServer, queue.Queue]:
    """A local HTTP server that records the JSON bodies POSTed to it."""
    got: queue.Queue = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.put(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    return hook, got


@pytest.mark.parametrize("suffix", ["monitor", "ports/monitor"])
def test_port_monitor_calls_back(sb, api, suffix):  # type: ignore[no-untyped-def]
    hook, got = _callback_server()
    callback = f"http://127.0.0.1:{hook.server_address[1]}/cb"
    try:
        port = 8300 if suffix == "monitor" else 8301
        proc = sb.process.exec({"command": f"sleep 0.5; exec python3 -m http.server {port}"})
        base = f"{_url(sb)}/network/process/{proc.pid}/{suffix}"
        assert api.post(base, json={"callback": callback}).status_code == 200
        event = got.get(timeout=15)
        assert (event["port"], event["pid"], event["name"]) == (port, proc.pid, proc.name)
        assert api.delete(base).status_code == 200
        assert api.post(base, json={"callback": "file:///etc/passwd"}).status_code == 400
        assert api.post(base, json={}).status_code == 400
        sb.process.kill(proc.pid)
    finally:
        hook.shutdown()
        hook.server_close()


def test_terminal_session_survives_its_socket(server, sb, api):  # type: ignore[no-untyped-def]
    session = unique("s")
    with _terminal(server, sb, f"sessionId={session}") as ws:
        ws.send(json.dumps({"type": "input", "data": "export X=kept; echo ready$((1+1))\r"}))
        _read_until(ws, "ready2")
    shell = api.get(f"{_url(sb)}/process/terminal-{session}").json()
    assert shell["status"] == "running"  # detached, not killed
    with _terminal(server, sb, f"sessionId={session}") as ws:
        ws.send(json.dumps({"type": "input", "data": "echo $X-again\r"}))
        assert "kept-again" in _read_until(ws, "kept-again")
    assert api.get(f"{_url(sb)}/process/terminal-{session}").json()["pid"] == shell["pid"]
    api.delete(f"{_url(sb)}/process/terminal-{session}/kill")
    # Without a session id, closing the socket kills the shell.
    with _terminal(server, sb, "") as ws:
        ws.send(json.dumps({"type": "input", "data": "echo pid=$$=end\r"}))
        seen = _read_until(ws, "=end\r\n")  # the echoed input ends "=end\r\n" too
        while not re.search(r"pid=(\d+)=end", seen):
            seen += _read_until(ws, "=end")
        pid = re.search(r"pid=(\d+)=end", seen).group(1)
    done = api.get(f"{_url(sb)}/process/{pid}/wait", params={"timeout": 10}).json()
    assert done["status"] == "killed"

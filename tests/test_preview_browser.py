"""A web page with a WebSocket, served from a sandbox and opened through its preview in headless
Chromium (Debian's `chromium`, installed by scripts/install)."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import sdk_sandbox, unique
from test_sandbox_ports_terminal import _serve

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"

# One port, two protocols: GET → the page, Upgrade → a WebSocket echo ("echo:" + message).
PAGE_APP = r"""
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
    lines = head.split(b"\r\n")
    if b"upgrade: websocket" not in head.lower():
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n" % len(PAGE) + PAGE)
        await w.drain(); w.close(); return
    key = [l.split(b":", 1)[1].strip() for l in lines if l.lower().startswith(b"sec-websocket-key")][0]
    acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    w.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n")
    while True:
        b0, b1 = await r.readexactly(2)
        n = b1 & 127
        if n == 126: n = struct.unpack(">H", await r.readexactly(2))[0]
        elif n == 127: n = struct.unpack(">Q", await r.readexactly(8))[0]
        mask = await r.readexactly(4) if b1 & 128 else b"\0\0\0\0"
        data = bytes(c ^ mask[i % 4] for i, c in enumerate(await r.readexactly(n)))
        if b0 & 15 == 8:
            w.close(); return
        reply = b"echo:" + data
        w.write(bytes([0x81, len(reply)]) + reply); await w.drain()
async def main():
    server = await asyncio.start_server(handle, "0.0.0.0", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""


def chromium(url: str, screenshot: Path | None = None) -> str:
    """The DOM after the page ran (a few seconds of virtual time), optionally a screenshot."""
    args = [
        str(CHROMIUM),
        "--headless=new",
        "--no-sandbox",  # runs as root in CI containers
        "--disable-gpu",
        "--virtual-time-budget=5000",
        "--run-all-compositor-stages-before-draw",
    ]
    if screenshot is not None:
        subprocess.run(
            [*args, "--window-size=800,600", f"--screenshot={screenshot}", url],
            capture_output=True,
            timeout=60,
            check=False,
        )
    out = subprocess.run([*args, "--dump-dom", url], capture_output=True, timeout=60, text=True)
    return out.stdout


def dom_with(url: str, marker: str, screenshot: Path | None = None, attempts: int = 4) -> str:
    """chromium's DOM once it shows `marker`. A WebSocket does not hold headless Chromium's
    virtual clock, so on a loaded host the page can be dumped before the echo returns; a few
    fresh page loads (bounded) tell a slow host from a broken WebSocket, which never shows it."""
    dom = ""
    for _ in range(attempts):
        dom = chromium(url, screenshot)
        if marker in dom:
            break
    return dom


@pytest.fixture(scope="module")
def sb(server):  # type: ignore[no-untyped-def]
    with sdk_sandbox(server, "web") as box:
        _serve(box, PAGE_APP, 5173, unique("page"))
        yield box


def test_page_and_websocket_through_a_public_preview(sb, api, tmp_path):  # type: ignore[no-untyped-def]
    p = sb.previews.create({"port": 5173, "public": True, "name": unique("pub")})
    host_url = api.get(f"/v0/sandboxes/{sb.metadata.name}/previews/{p.name}").json()["spec"][
        "hostUrl"
    ]
    shot = tmp_path / "page.png"
    for url in (p.spec.url + "/", host_url + "/"):  # path form and *.localhost host form
        dom = dom_with(url, "ws:echo:ping", shot)
        assert 'id="title">cove preview<' in dom, dom
        assert "ws:echo:ping" in dom, dom
    assert shot.exists() and shot.stat().st_size > 1000  # a rendered PNG


def test_private_preview_in_a_browser(sb, api):  # type: ignore[no-untyped-def]
    p = sb.previews.create({"port": 5173, "name": unique("priv")})
    assert "private" in chromium(p.spec.url + "/")  # the 401 body
    token = p.tokens.create(datetime.now(UTC) + timedelta(hours=1))
    # The link carries the token; the page's WebSocket then uses the cookie it set.
    dom = dom_with(p.spec.url + "/?bl_preview_token=" + token.value, "ws:echo:ping")
    assert "ws:echo:ping" in dom, dom

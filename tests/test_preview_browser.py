"""A Python web page with a WebSocket, served from a sandbox and opened through its preview in
headless Chromium (tests/browser.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from browser import assert_png
from conftest import sdk_sandbox, unique
from test_sandbox_ports_terminal import _serve

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


@pytest.fixture(scope="module")
def sb(server):  # type: ignore[no-untyped-def]
    with sdk_sandbox(server, "web") as box:
        _serve(box, PAGE_APP, 5173, unique("page"))
        yield box


def test_page_and_websocket_through_a_public_preview(sb, api, browser, tmp_path):  # type: ignore[no-untyped-def]
    p = sb.previews.create({"port": 5173, "public": True, "name": unique("pub")})
    host_url = api.get(f"/v0/sandboxes/{sb.metadata.name}/previews/{p.name}").json()["spec"][
        "hostUrl"
    ]
    for url in (p.spec.url + "/", host_url + "/"):  # path form and *.localhost host form
        page = browser.open(url)
        assert page["status"] == 200 and "cove preview" in page["text"], page
        out = browser.wait("document.getElementById('out')?.textContent", lambda v: v != "waiting")
        assert out == "ws:echo:ping", out  # the WebSocket round trip
        assert_png(browser.screenshot(tmp_path / "page.png"))


def test_private_preview_in_a_browser(sb, browser):  # type: ignore[no-untyped-def]
    p = sb.previews.create({"port": 5173, "name": unique("priv")})
    page = browser.open(p.spec.url + "/")
    assert page["status"] == 401 and "private" in page["text"], page
    token = p.tokens.create(datetime.now(UTC) + timedelta(hours=1))
    # The link carries the token; the page's WebSocket then uses the cookie it set.
    page = browser.open(p.spec.url + "/?bl_preview_token=" + token.value)
    assert page["status"] == 200, page
    out = browser.wait("document.getElementById('out')?.textContent", lambda v: v != "waiting")
    assert out == "ws:echo:ping", out

"""A Python web page with a WebSocket, served from a sandbox and opened through its preview in
headless Chromium (tests/browser.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from browser import assert_png
from conftest import sdk_sandbox, unique
from test_sandbox_ports_terminal import WS_ECHO, _serve


@pytest.fixture(scope="module")
def sb(server):  # type: ignore[no-untyped-def]
    with sdk_sandbox(server, "web") as box:
        _serve(box, WS_ECHO, 5173, unique("page"))
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
        assert out == "ws:/ws ping", out  # the WebSocket round trip (the app sees /ws)
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
    assert out == "ws:/ws ping", out

"""Headless Chromium (Debian's `chromium`, installed by scripts/install) for preview tests.

Driven over the DevTools protocol so every wait is for a page condition with a deadline: a
WebSocket does not hold headless Chromium's virtual clock, so `--dump-dom` alone could read the
page before the socket answered (that flaked on a loaded host).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

CHROMIUM = shutil.which("chromium") or "chromium"
WAIT_S = 30.0  # for a page condition; a broken feature never meets it


class Browser:
    """Headless Chromium with a fresh profile, one page, driven over the DevTools protocol."""

    def __init__(self, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",  # runs as root
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-extensions",
                "--no-first-run",
                "--no-default-browser-check",
                "--window-size=1000,700",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its helper processes share its group, ended with it
        )
        self._stack = contextlib.ExitStack()
        self._stack.callback(self._stop)
        self._id = 0
        try:
            self.ws = self._connect(profile)
        except BaseException:
            self._stack.close()
            raise

    def _connect(self, profile: Path) -> Any:
        active = profile / "DevToolsActivePort"  # "port\n/devtools/browser/…"
        deadline = time.monotonic() + WAIT_S
        while not (active.exists() and len(active.read_text().split()) == 2):
            assert self.proc.poll() is None and time.monotonic() < deadline, "no chromium"
            time.sleep(0.05)
        port = int(active.read_text().split()[0])
        pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
        return self._stack.enter_context(connect(url, max_size=None, open_timeout=10))

    def _stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def close(self) -> None:
        self._stack.close()

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + WAIT_S
        while True:  # events in between are not needed
            msg = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if msg.get("id") == self._id:
                return msg

    def eval(self, expression: str) -> Any:
        """Its value, or None while the page is between documents."""
        msg = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        result = msg.get("result", {})
        if "error" in msg or "exceptionDetails" in result:
            return None
        return result["result"].get("value")

    def open(self, url: str) -> dict[str, Any]:
        """Navigate and wait for the new document: its URL, HTTP status and text."""
        self.call("Page.navigate", url=url)
        return self.wait(
            "({href: location.href, ready: document.readyState, text: document.body.innerText,"
            " status: performance.getEntriesByType('navigation')[0]?.responseStatus})",
            lambda v: v["href"] == url and v["ready"] == "complete",
        )

    def wait(self, expression: str, done: Any = bool) -> Any:
        deadline = time.monotonic() + WAIT_S
        while True:
            value = self.eval(expression)
            if value is not None and done(value):
                return value
            if time.monotonic() > deadline:
                return value  # the caller's assertion shows what the page had
            time.sleep(0.05)

    def text(self, element_id: str) -> str | None:
        return self.eval(f"document.getElementById({element_id!r})?.textContent")

    def screenshot(self, path: Path) -> bytes:
        msg = self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(msg["result"]["data"]))
        return path.read_bytes()


def texts(ids: tuple[str, ...]) -> str:
    return "[" + ",".join(f"document.getElementById({i!r})?.textContent" for i in ids) + "]"


def assert_png(data: bytes, width: int = 1000) -> None:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    w, h = struct.unpack(">II", data[16:24])  # IHDR
    assert w == width and h > 0 and len(data) > 2000  # a rendered page, not an empty image


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path / "profile")
    yield b
    b.close()

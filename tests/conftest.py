"""Fixtures: a real cove server (real runtime, SQLite, HTTP) and the official blaxel SDK."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator

import pytest
from server import KEYS, CoveServer, leftovers, new_data_dir, served

# The SDK reads its settings at import time: configure it before anything imports blaxel.
os.environ.update(
    {"BL_API_KEY": KEYS["ws-a"], "BL_WORKSPACE": "ws-a", "BL_REGION": "local", "DO_NOT_TRACK": "1"}
)
pytest_plugins = ("browser",)  # the `browser` fixture (headless Chromium) for preview tests


@contextlib.contextmanager
def own_server(**env: str) -> Iterator[CoveServer]:
    """A server with its own settings (COVE_* env); it must stop cleanly and leave nothing."""
    with served(**env) as srv:
        yield srv
    assert srv.exit_code == 0, srv.log()
    assert leftovers(srv.data_dir) == []


@pytest.fixture(scope="session")
def server() -> Iterator[CoveServer]:
    with own_server() as srv:
        yield srv


@pytest.fixture
def fresh_server() -> Iterator[CoveServer]:
    """A server of one's own, for tests that stop, kill or restart it."""
    srv = CoveServer(new_data_dir())
    yield srv
    if srv.proc is not None and srv.proc.poll() is None:
        srv.stop()
    shutil.rmtree(srv.data_dir, ignore_errors=True)


@pytest.fixture
def api(server: CoveServer):  # type: ignore[no-untyped-def]
    with server.client("ws-a") as client:
        yield client


@pytest.fixture
def sdk(server: CoveServer):  # type: ignore[no-untyped-def]
    """The official SDK pointed at this server (blaxel-compat.md §1)."""
    from blaxel.core.client import client

    client.with_base_url(server.url + "/v0")
    import blaxel.core.sandbox as sandbox_module

    return sandbox_module


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def sdk_sandbox(server: CoveServer, prefix: str, memory: int = 1024) -> Iterator[object]:
    """A sandbox made and deleted through the official SDK (for module-scoped fixtures)."""
    from blaxel.core.client import client

    client.with_base_url(server.url + "/v0")
    import blaxel.core.sandbox as sdk

    box = sdk.SyncSandboxInstance.create({"name": unique(prefix), "memory": memory})
    try:
        yield box
    finally:
        sdk.SyncSandboxInstance.delete(box.metadata.name)

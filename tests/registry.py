"""Package registries from inside a sandbox, on this host: the registry names resolve to a mirror
on a reserved address range whose CA only the host trusts. A test server opens exactly those
addresses (COVE_EGRESS_ALLOW_NETS=registry_mirrors()). HTTPS is tunnelled end to end through
the egress proxy and the sandbox verifies the mirror itself: cove's sandbox trust bundle is the
host's CAs + cove's (SSL_CERT_FILE, PIP_CERT…; Node via --use-openssl-ca), so nothing is uploaded.
The only names tests resolve for real are these registry names."""

from __future__ import annotations

import ipaddress
import socket
import time
from typing import Any

import httpx

REGISTRIES = ("registry.npmjs.org", "pypi.org", "files.pythonhosted.org")


def registry_mirrors(names: tuple[str, ...] = REGISTRIES) -> str:
    """The non-public addresses this host's DNS gives the registries (empty when public)."""
    found = set()
    for name in names:
        try:
            infos = socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)
        except OSError:
            continue
        found |= {ipaddress.ip_address(info[4][0]) for info in infos}
    return ",".join(sorted(str(ip) for ip in found if not ip.is_global))


def run(
    client: httpx.Client, sandbox_url: str, body: dict[str, Any], timeout_s: float = 600
) -> dict[str, Any]:
    """A process run to completion: the API answers after 60 s at most, then poll (bounded)."""
    r = client.post(f"{sandbox_url}/process", json={**body, "waitForCompletion": True})
    assert r.status_code == 200, r.text
    proc = r.json()
    deadline = time.monotonic() + timeout_s
    while proc["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
        proc = client.get(f"{sandbox_url}/process/{proc['pid']}").json()
    return proc


def npm_install(
    client: httpx.Client, sandbox_url: str, workdir: str, packages: list[str]
) -> dict[str, Any]:
    """`npm install packages` in workdir (created, with a package.json) through the proxy."""
    command = (
        f"mkdir -p {workdir} && cd {workdir} && (test -f package.json || npm init -y >/dev/null)"
        " && npm install --no-audit --no-fund --no-update-notifier " + " ".join(packages)
    )
    return run(client, sandbox_url, {"command": command})

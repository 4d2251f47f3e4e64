"""Egress served by the cove process itself: per sandbox, a proxy on 127.0.0.1:3128 and a DNS
resolver on 127.0.0.1:53, both listening inside the sandbox's lo-only network namespace
(sockets created there through setns, research/isolation.md §3) and dialling from the host.
Nothing runs inside the sandbox and, by default, the netns gets no interface, route or address.

With transparent capture (COVE_EGRESS_TRANSPARENT=on) the netns also gets a default route over
`lo` and one nat rule sending every TCP connection not aimed at 127/8 to 127.0.0.1:3129, where
the proxy takes the destination from SO_ORIGINAL_DST and the name from TLS SNI or the Host
header. Sandboxes hold no CAP_NET_ADMIN, so they cannot remove the rule or the route.

With a CA directory, HTTPS to hosts a routing rule must see inside is intercepted (certs.py);
sandboxes trust cove's CA through files in the directory the runtime bind-mounts read-only into
every sandbox (`shared`: host path, path inside), named by the usual variables in env().
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cove.domain.network import NetworkPolicy
from cove.egress.base import PROXY_PORT, PROXY_URL, Counters, EgressError, EgressReport
from cove.egress.certs import Authority
from cove.egress.dns import DnsServer
from cove.egress.log import RequestLog
from cove.egress.policy import IPNetwork, Resolver
from cove.egress.proxy import IDLE_TIMEOUT_S, SandboxProxy
from cove.runtime.netns import socket_in_netns

DNS_PORT = 53
TRANSPARENT_PORT = 3129
NO_PROXY = "localhost,127.0.0.1,::1"
FINAL_COUNTERS = 4096  # detached sandboxes whose last counters stay readable
# Variables naming the trust bundle (system CAs + cove's CA) for the common TLS clients.
_BUNDLE_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT")
_BUNDLE_VARS += ("GIT_SSL_CAINFO", "AWS_CA_BUNDLE")
# Node: NODE_EXTRA_CA_CERTS makes every start build its root store (measured: +80 ms per `node`
# with the bundle, +28 ms with cove's CA alone), so it is not set; --use-openssl-ca makes Node
# trust OpenSSL's store instead, i.e. SSL_CERT_FILE, loaded on the first TLS connection. (A
# NODE_OPTIONS in the sandbox's envs replaces this one.)
_NODE_OPTIONS = "--use-openssl-ca"
# Idempotent (a re-attach after a cove restart finds them in place).
_CAPTURE = (
    "ip route replace default dev lo src 127.0.0.1 && "
    "{ iptables -w -t nat -C OUTPUT {rule} 2>/dev/null || iptables -w -t nat -A OUTPUT {rule}; }"
).replace("{rule}", f"-p tcp ! -d 127.0.0.0/8 -j REDIRECT --to-ports {TRANSPARENT_PORT}")


@dataclass
class _Attached:
    proxy: SandboxProxy
    dns: DnsServer
    log: RequestLog

    async def close(self) -> None:
        await self.proxy.close()
        await self.dns.close()


def _bound(init_pid: int, kind: int, port: int) -> socket.socket:
    sock = socket_in_netns(init_pid, kind=kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _listeners(init_pid: int, transparent: bool) -> list[socket.socket]:
    """[proxy, dns(, transparent)] bound to 127.0.0.1 in init_pid's netns. Blocking: run it in
    a worker thread."""
    wanted = [(socket.SOCK_STREAM, PROXY_PORT), (socket.SOCK_DGRAM, DNS_PORT)]
    if transparent:
        wanted.append((socket.SOCK_STREAM, TRANSPARENT_PORT))
    socks: list[socket.socket] = []
    try:
        for kind, port in wanted:
            socks.append(_bound(init_pid, kind, port))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def _check_own_netns(init_pid: int) -> None:
    """Refuse a pid that lives in cove's own network namespace: listeners there would serve the
    host, and transparent capture would reroute the host's own traffic."""
    try:
        theirs = os.stat(f"/proc/{init_pid}/ns/net")
        ours = os.stat("/proc/self/ns/net")
    except OSError as exc:
        raise EgressError(f"cannot find the sandbox's network: {exc.strerror}") from None
    if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
        raise EgressError("the sandbox shares the host's network namespace")


async def _capture(init_pid: int) -> None:
    """Route + redirect rule in the sandbox's netns (tools run from the host, in that netns)."""
    proc = await asyncio.create_subprocess_exec(
        "nsenter",
        f"--net=/proc/{init_pid}/ns/net",
        "--",
        "sh",
        "-c",
        _CAPTURE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise EgressError(f"cannot set up transparent capture: {err.decode().strip()[:200]}")


class LocalEgress:
    def __init__(
        self,
        test_hosts: dict[str, tuple[str, int]],
        open_nets: tuple[IPNetwork, ...] = (),
        transparent: bool = False,
        *,
        ca_dir: Path | None = None,
        shared: tuple[Path, str] | None = None,
        test_ca: Path | None = None,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self._resolver = Resolver(test_hosts, open_nets)
        self._transparent = transparent
        self._idle_s = idle_timeout_s
        self._attached: dict[str, _Attached] = {}
        self._final: collections.OrderedDict[str, Counters] = collections.OrderedDict()
        self._authority = Authority(ca_dir, test_ca) if ca_dir is not None else None
        self._trust_env: dict[str, str] = {}
        if self._authority is not None and shared is not None:
            _, bundle_name = self._authority.write_trust(shared[0])
            bundle = f"{shared[1]}/{bundle_name}"
            self._trust_env = {var: bundle for var in _BUNDLE_VARS}
            self._trust_env["NODE_OPTIONS"] = _NODE_OPTIONS

    def env(self) -> dict[str, str]:
        proxy = {k: PROXY_URL for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
        npm = {"npm_config_proxy": PROXY_URL, "npm_config_https_proxy": PROXY_URL}
        return {**proxy, **npm, "NO_PROXY": NO_PROXY, "no_proxy": NO_PROXY, **self._trust_env}

    async def attach(self, key: str, init_pid: int, policy: NetworkPolicy) -> None:
        await self.detach(key)
        _check_own_netns(init_pid)
        try:
            socks = await asyncio.to_thread(_listeners, init_pid, self._transparent)
        except OSError as exc:
            raise EgressError(f"cannot listen in the sandbox's network: {exc.strerror}") from None
        log = RequestLog()
        proxy = SandboxProxy(self._resolver, log, policy, self._authority, self._idle_s)
        attached = _Attached(proxy, DnsServer(self._resolver, lambda: proxy.policy), log)
        try:
            await proxy.serve(socks[0])
            await attached.dns.serve(socks[1])
            if self._transparent:
                await proxy.serve(socks[2], transparent=True)
                await _capture(init_pid)
        except BaseException as exc:
            await attached.close()
            for sock in socks:  # no-ops for those a server owns and closed already
                sock.close()
            if isinstance(exc, OSError):
                raise EgressError(f"cannot serve the sandbox's network: {exc}") from None
            raise
        self._attached[key] = attached
        self._final.pop(key, None)

    def update(self, key: str, policy: NetworkPolicy) -> None:
        attached = self._attached.get(key)
        if attached is not None:
            attached.proxy.policy = policy

    async def detach(self, key: str) -> None:
        attached = self._attached.pop(key, None)
        if attached is not None:
            with contextlib.suppress(Exception):
                await attached.close()
            self._final[key] = attached.log.totals()
            while len(self._final) > FINAL_COUNTERS:
                self._final.popitem(last=False)

    def report(self, key: str, limit: int) -> EgressReport | None:
        attached = self._attached.get(key)
        return attached.log.report(limit) if attached is not None else None

    def counters(self, key: str) -> Counters | None:
        attached = self._attached.get(key)
        return attached.log.totals() if attached is not None else self._final.get(key)

    async def close(self) -> None:
        for key in list(self._attached):
            await self.detach(key)

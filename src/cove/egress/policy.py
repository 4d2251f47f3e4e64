"""Where a sandbox may connect: its domain policy, then the address rules nothing overrides.

Address rules apply to the addresses a name RESOLVES to, at connect time, and the proxy connects
to exactly the addresses checked here — so a name that resolves to 127.0.0.1 or 169.254.169.254
(DNS rebinding) is refused like the literal. Refused always: anything not globally routable
(loopback, link-local, RFC 1918, 100.64/10, ULA, unspecified, documentation, …), multicast, and
every address of this host. Only the names of the test-hosts map (COVE_EGRESS_TEST_HOSTS, off by
default) bypass the address rules, and only towards the address they are mapped to. An operator
may open private or reserved networks where the host's DNS legitimately points (a package
mirror, COVE_EGRESS_ALLOW_NETS); loopback, link-local and the host's own addresses stay refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass

from cove.domain.network import NetworkPolicy, normalize_host

HOST_ADDRESSES_TTL_S = 10.0
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# What a test-hosts name resolves to INSIDE a sandbox (DNS): a documentation address, never
# the loopback it is mapped to, so a program that ignores the proxy variables connects out
# (and is captured, when capture is on) instead of to the sandbox's own lo.
TEST_HOST_PLACEHOLDER = "192.0.2.1"


class Refused(Exception):
    """The destination may not be reached; the message says why (shown to the sandbox)."""


@dataclass(frozen=True)
class Target:
    host: str  # as requested, normalized
    port: int
    addresses: list[tuple[int, tuple]]  # (family, sockaddr) to try in order; all checked


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _embedded_ipv4(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64): judged as that address, or
    64:ff9b::a9fe:a9fe would reach 169.254.169.254 through a NAT64 gateway."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def address_refusal(
    ip: IPAddress, host_addresses: set[IPAddress], open_nets: tuple[IPNetwork, ...] = ()
) -> str | None:
    """What makes ip unreachable from a sandbox ("a loopback address", …), or None."""
    ip = _embedded_ipv4(ip)
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip in host_addresses:
        return "an address of the host"
    if not ip.is_global and not any(ip in net for net in open_nets):
        return "a private or reserved address"
    return None


def host_addresses() -> set[IPAddress]:
    """Every address configured on this host (IPv4 from fib_trie LOCAL, IPv6 from if_inet6)."""
    found: set[IPAddress] = set()
    try:
        with open("/proc/net/fib_trie") as f:
            last = None
            for line in f:
                text = line.strip()
                if text.startswith("|--"):
                    last = text[3:].strip()
                elif text.startswith("/32 host LOCAL") and last:
                    found.add(ipaddress.ip_address(last))
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                raw = line.split()[0]
                found.add(ipaddress.IPv6Address(bytes.fromhex(raw)))
    except (OSError, ValueError, IndexError):
        pass
    return found


class Resolver:
    """Turns a requested host:port into checked addresses, or Refused."""

    def __init__(
        self, test_hosts: dict[str, tuple[str, int]], open_nets: tuple[IPNetwork, ...] = ()
    ) -> None:
        self._test_hosts = test_hosts
        self._open_nets = open_nets
        self._host_addresses: set[IPAddress] = set()
        self._checked_at = -HOST_ADDRESSES_TTL_S

    def _own(self) -> set[IPAddress]:
        now = time.monotonic()
        if now - self._checked_at > HOST_ADDRESSES_TTL_S:
            self._host_addresses = host_addresses()
            self._checked_at = now
        return self._host_addresses

    async def resolve(self, policy: NetworkPolicy, host: str, port: int) -> Target:
        name = normalize_host(host)
        if not name:
            raise Refused("no destination host")
        reason = policy.refusal(name)
        if reason is not None:
            raise Refused(reason)
        mapped = self._test_hosts.get(name)
        if mapped is not None:
            ip = ipaddress.ip_address(mapped[0])
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            return Target(name, port, [(family, (str(ip), mapped[1]))])
        return Target(name, port, await self._lookup(name, port))

    async def _lookup(self, name: str, port: int) -> list[tuple[int, tuple]]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, ValueError) as exc:  # ValueError: NUL bytes
            raise Refused(f"{name} does not resolve ({exc})") from None
        own = self._own()
        addresses = []
        for family, _, _, _, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = ipaddress.ip_address(sockaddr[0].split("%")[0])
            reason = address_refusal(ip, own, self._open_nets)
            if reason is not None:  # one bad answer taints the name: rebinding
                said = f"{ip} is" if name == str(ip) else f"{name} resolves to {ip},"
                raise Refused(f"{said} {reason}")
            if (family, sockaddr) not in addresses:
                addresses.append((family, sockaddr))
        if not addresses:
            raise Refused(f"{name} has no usable address")
        return addresses

    async def addresses_for(self, policy: NetworkPolicy, name: str, family: int) -> list[str]:
        """For the DNS resolver: checked addresses of `name` in `family`; Refused otherwise."""
        target = await self.resolve(policy, name, 0)
        if name in self._test_hosts:
            return [TEST_HOST_PLACEHOLDER] if family == socket.AF_INET else []
        return [sa[0] for fam, sa in target.addresses if fam == family]

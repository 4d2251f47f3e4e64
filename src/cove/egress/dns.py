"""One sandbox's DNS resolver: UDP on 127.0.0.1:53 inside its netns, answering from the host.

A and AAAA answers only for names the sandbox's policy allows and only with addresses the
address rules accept (policy.Resolver, the same check the proxy makes); NXDOMAIN for every other
name. Other query types of an allowed name get an empty answer. The sandbox's resolv.conf points
here. Answers are informational: the netns has no route, so every connection still goes through
the proxy, which checks again at connect time.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

from cove.domain.network import NetworkPolicy
from cove.egress.policy import Refused, Resolver

QTYPE_A, QTYPE_AAAA, QCLASS_IN = 1, 28, 1
NOERROR, FORMERR, NXDOMAIN, NOTIMP = 0, 1, 3, 4
TTL_S = 30
MAX_IN_FLIGHT = 64


class Query:
    def __init__(self, packet: bytes) -> None:
        """Parse a one-question standard query; ValueError on anything else."""
        if len(packet) < 12:
            raise ValueError("short packet")
        self.id, flags, qdcount = struct.unpack("!HHH", packet[:6])
        if flags & 0x8000:
            raise ValueError("not a query")
        self.opcode = (flags >> 11) & 0xF
        self.rd = flags & 0x0100
        labels, pos = [], 12
        if qdcount != 1:
            raise ValueError("one question only")
        while True:
            if pos >= len(packet):
                raise ValueError("truncated name")
            length = packet[pos]
            pos += 1
            if length == 0:
                break
            if length > 63 or pos + length > len(packet):
                raise ValueError("bad label")
            labels.append(packet[pos : pos + length].decode("ascii", "replace"))
            pos += length
        if pos + 4 > len(packet):
            raise ValueError("truncated question")
        self.qtype, self.qclass = struct.unpack("!HH", packet[pos : pos + 4])
        self.question = packet[12 : pos + 4]
        self.name = ".".join(labels).lower()

    def answer(self, rcode: int, records: list[bytes]) -> bytes:
        flags = 0x8000 | 0x0080 | self.rd | (self.opcode << 11) | rcode  # QR, RA
        head = struct.pack("!HHHHHH", self.id, flags, 1, len(records), 0, 0)
        return head + self.question + b"".join(records)


def record(qtype: int, address: str) -> bytes:
    family = socket.AF_INET if qtype == QTYPE_A else socket.AF_INET6
    data = socket.inet_pton(family, address)
    return struct.pack("!HHHIH", 0xC00C, qtype, QCLASS_IN, TTL_S, len(data)) + data


class DnsServer(asyncio.DatagramProtocol):
    def __init__(self, resolver: Resolver, policy: Callable[[], NetworkPolicy]) -> None:
        self._resolver = resolver
        self._policy = policy
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()

    async def serve(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, sock=sock)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed.set()

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if len(self._tasks) >= MAX_IN_FLIGHT:
            return  # the client retries
        try:
            query = Query(data)
        except ValueError:
            return
        task = asyncio.ensure_future(self._answer(query, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, query: Query, addr: tuple) -> None:
        reply = await self.reply(query)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(reply, addr)

    async def reply(self, query: Query) -> bytes:
        if query.opcode != 0:
            return query.answer(NOTIMP, [])
        if query.qclass != QCLASS_IN:
            return query.answer(NOTIMP, [])
        policy = self._policy()
        if query.qtype not in (QTYPE_A, QTYPE_AAAA):
            return query.answer(NXDOMAIN if policy.refusal(query.name) else NOERROR, [])
        family = socket.AF_INET if query.qtype == QTYPE_A else socket.AF_INET6
        try:
            found = await self._resolver.addresses_for(policy, query.name, family)
        except Refused:
            return query.answer(NXDOMAIN, [])
        return query.answer(NOERROR, [record(query.qtype, a) for a in found])

    async def close(self) -> None:
        """Returns once the socket is closed (a transport closes it a loop iteration later),
        so a new resolver can bind the port at once, e.g. on a re-attach."""
        if self._transport is not None:
            self._transport.close()
            await self._closed.wait()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

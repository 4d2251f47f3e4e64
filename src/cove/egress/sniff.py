"""What a transparently captured connection is after (proxy.py, COVE_EGRESS_TRANSPARENT): its
original destination, and the name its first bytes ask for (TLS SNI or an HTTP Host header)."""

from __future__ import annotations

import contextlib
import socket
import struct

from cove.egress.http1 import BadRequest, split_host_port

SO_ORIGINAL_DST = 80


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """Where a redirected IPv4 connection was going (netfilter's SO_ORIGINAL_DST)."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, addr = struct.unpack("!2xH4s8x", raw)
    return socket.inet_ntoa(addr), port


def server_name(first: bytes) -> str | None:
    """The name a connection's first bytes ask for: TLS SNI, or an HTTP/1 Host header."""
    if first[:1] == b"\x16":
        return _sni(first)
    head, _, _ = first.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"host":
            host = value.strip().decode("latin-1")
            with contextlib.suppress(BadRequest):
                return split_host_port(host, 0)[0] or None
            return None
    return None


def _sni(record: bytes) -> str | None:
    """server_name from a TLS ClientHello record; None when absent or malformed."""
    try:
        pos = 5 + 4 + 2 + 32  # record header, handshake header, version, random
        if record[5] != 1:
            return None
        pos += 1 + record[pos]  # session id
        pos += 2 + struct.unpack_from("!H", record, pos)[0]  # cipher suites
        pos += 1 + record[pos]  # compression methods
        end = pos + 2 + struct.unpack_from("!H", record, pos)[0]
        pos += 2
        while pos + 4 <= min(end, len(record)):
            kind, length = struct.unpack_from("!HH", record, pos)
            pos += 4
            if kind == 0:  # server_name: list length, name type 0, name length, name
                name_len = struct.unpack_from("!H", record, pos + 3)[0]
                return record[pos + 5 : pos + 5 + name_len].decode("ascii")
            pos += length
    except (IndexError, struct.error, UnicodeDecodeError, BadRequest):
        return None
    return None

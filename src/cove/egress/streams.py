"""Byte streams of the egress proxy: dialling checked addresses, TLS over them, copying."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable

from cove.egress.policy import Target
from cove.egress.tls import TlsStream

CONNECT_TIMEOUT_S = 10.0
CHUNK = 64 * 1024
Reader = asyncio.StreamReader | TlsStream
Writer = asyncio.StreamWriter | TlsStream
Stream = tuple[Reader, Writer]


async def dial(target: Target) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the first reachable checked address (never re-resolving the name)."""
    error: OSError | None = None
    for _, sockaddr in target.addresses:
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(sockaddr[0], sockaddr[1], limit=CHUNK), CONNECT_TIMEOUT_S
            )
        except OSError as exc:
            error = exc
    assert error is not None
    raise error


async def tls_to(
    stream: tuple[asyncio.StreamReader, asyncio.StreamWriter], context: ssl.SSLContext, host: str
) -> Stream:
    """TLS over a dialled stream, the certificate verified for `host`."""
    tls = TlsStream(*stream, context, server_side=False, server_hostname=host)
    try:
        await tls.handshake(CONNECT_TIMEOUT_S)
    except BaseException:
        tls.close()
        raise
    return tls, tls


async def pump(
    src: Reader,
    dst: Writer,
    count: Callable[[int], None],
    first: Callable[[bytes], None] | None,
) -> None:
    while data := await src.read(CHUNK):
        if first is not None:
            first(data)
            first = None
        count(len(data))
        dst.write(data)
        await dst.drain()
    if dst.can_write_eof():
        with contextlib.suppress(OSError):
            dst.write_eof()

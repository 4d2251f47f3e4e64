"""TLS for intercepted connections, driven by ssl.MemoryBIO over a plain asyncio stream.

Not the event loop's own TLS transports: uvloop's (cove's loop) drops the last buffered bytes
when a peer closes its TCP connection without a TLS close_notify while the reader is paused for
backpressure (MagicStack/uvloop PR #661), which truncated large responses of servers that close
that way. Here the bytes already received are always decrypted and delivered before EOF, and
whether the peer closed cleanly is known (`clean_eof`), so a proxy can pass an unclean end on.

A TlsStream offers the parts of the StreamReader / StreamWriter interfaces the proxy uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

CHUNK = 64 * 1024


class TlsStream:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        context: ssl.SSLContext,
        server_side: bool,
        server_hostname: str | None = None,
        limit: int = CHUNK,
    ) -> None:
        self._raw_reader, self._raw_writer = reader, writer
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side, server_hostname)
        self._buf = bytearray()
        self._limit = limit
        self._eof = False
        self.clean_eof = False  # the peer ended with a close_notify
        self.notify_on_close = True  # send a close_notify of our own on close()

    async def handshake(self, timeout: float) -> None:
        """Raises ssl.SSLError (e.g. a refused certificate), ConnectionError or TimeoutError."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    self._obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._flush()
                    if not await self._feed():
                        raise ConnectionResetError("closed during the TLS handshake") from None
            self._flush()
            await self._raw_writer.drain()

    def _flush(self) -> None:
        data = self._out.read()
        if data and not self._raw_writer.is_closing():
            self._raw_writer.write(data)

    async def _feed(self) -> bool:
        data = await self._raw_reader.read(CHUNK)
        if not data:
            self._in.write_eof()
            return False
        self._in.write(data)
        return True

    async def _fill(self) -> bool:
        """Decrypt more into the buffer; False at the end of the stream."""
        while not self._eof:
            try:
                data = self._obj.read(CHUNK)
            except ssl.SSLWantReadError:
                self._flush()  # e.g. session tickets, key updates
                if self._in.eof:  # everything received is decrypted: nothing more comes
                    self._eof = True
                    return False
                await self._feed()
                continue
            except ssl.SSLZeroReturnError:
                self._eof = self.clean_eof = True
                return False
            except ssl.SSLEOFError:  # TCP closed without a close_notify
                self._eof = True
                return False
            if data:
                self._buf += data
                return True
            self._eof = True
        return False

    # -- the reader side ------------------------------------------------------------------------

    async def read(self, n: int = -1) -> bytes:
        if not self._buf and not await self._fill():
            return b""
        size = len(self._buf) if n < 0 else min(n, len(self._buf))
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    async def readexactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not await self._fill():
                raise asyncio.IncompleteReadError(bytes(self._buf), n)
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        start = 0
        while (found := self._buf.find(separator, start)) < 0:
            if len(self._buf) > self._limit:
                raise asyncio.LimitOverrunError("separator not found within the limit", start)
            start = max(0, len(self._buf) - len(separator) + 1)
            if not await self._fill():
                raise asyncio.IncompleteReadError(bytes(self._buf), None)
        end = found + len(separator)
        data = bytes(self._buf[:end])
        del self._buf[:end]
        return data

    # -- the writer side ------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if data:
            self._obj.write(data)
            self._flush()

    async def drain(self) -> None:
        await self._raw_writer.drain()

    def can_write_eof(self) -> bool:
        return False  # TLS has no half-close; close() ends both ways

    def write_eof(self) -> None:
        raise NotImplementedError

    def is_closing(self) -> bool:
        return self._raw_writer.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._obj
        return self._raw_writer.get_extra_info(name, default)

    def close(self) -> None:
        if self.notify_on_close and not self._raw_writer.is_closing():
            with contextlib.suppress(ssl.SSLError, ValueError):
                self._obj.unwrap()  # queues our close_notify; the peer's is not awaited
            self._flush()
        self._raw_writer.close()

    async def wait_closed(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self._raw_writer.wait_closed()

"""One sandbox's HTTP proxy: plain-HTTP forwarding (absolute-form requests) and CONNECT tunnels.

Its listening socket lives in the sandbox's network namespace (127.0.0.1:3128 there); every
connection it accepts is served here, in the cove process, and dials out from the host
namespace to addresses checked by policy.Resolver. One request per client connection for plain
HTTP (the upstream is asked to close, and so is the client), so every request is checked.
HTTPS is tunnelled, not intercepted: the policy sees the CONNECT host only.

Transparent connections (redirected by the netns's nat rule, see local.py) carry no request:
the name comes from the TLS ClientHello's SNI or the HTTP Host header of the first bytes, else
the original destination address stands for the name. The proxy dials that name itself (the
policy and address rules apply to it as to any request), so naming an allowed host while
connecting to another address reaches the allowed host, not the other address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import struct
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from cove.domain.network import NetworkPolicy
from cove.egress.log import Entry, RequestLog
from cove.egress.policy import Refused, Resolver, Target

log = logging.getLogger("cove.egress")
HEAD_LIMIT = 64 * 1024
HEAD_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
CHUNK = 64 * 1024
MAX_CONNECTIONS = 256  # per sandbox; each holds two host fds (client side and upstream)
PEEK_TIMEOUT_S = 2.0  # transparent: wait this long for a ClientHello / request line
SO_ORIGINAL_DST = 80
_HOP_HEADERS = {"proxy-connection", "proxy-authorization", "connection", "keep-alive", "te"}
_REASONS = {400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large"}
_REASONS |= {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class BadRequest(Exception):
    pass


def split_host_port(authority: str, default: int | None) -> tuple[str, int]:
    """'host:port' / '[v6]:port' / 'host' (with a default port) → (host, port)."""
    if authority.startswith("["):
        host, sep, rest = authority[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise BadRequest(f"bad authority {authority!r}")
        port_text = rest[1:]
    elif authority.count(":") == 1:
        host, _, port_text = authority.partition(":")
    else:
        host, port_text = authority, ""
    if not port_text:
        if default is None:
            raise BadRequest("CONNECT needs host:port")
        return host, default
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BadRequest(f"bad port in {authority!r}")
    return host, int(port_text)


class SandboxProxy:
    def __init__(self, resolver: Resolver, log: RequestLog, policy: NetworkPolicy) -> None:
        self.policy = policy
        self._resolver = resolver
        self._log = log
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self, sock: socket.socket, transparent: bool = False) -> None:
        """Serve connections accepted on sock (already bound and listening)."""
        serve = self._serve_transparent if transparent else self._serve

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._handle(reader, writer, serve)

        self._servers.append(await asyncio.start_server(handle, sock=sock, limit=HEAD_LIMIT))

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()

    # -- one client connection ------------------------------------------------------------------

    async def _handle(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            if len(self._tasks) > MAX_CONNECTIONS:
                await respond(writer, 503, f"more than {MAX_CONNECTIONS} open connections")
                return
            await serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            # close() cancels us; ending normally spares asyncio's stream callback (3.11) from
            # logging the cancellation as an error. Nothing awaits this task's result.
            pass
        except Exception:
            log.exception("egress proxy: unexpected error")
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            await respond(writer, 431, "request head too large")
            return
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        try:
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                raise BadRequest("malformed request line")
            method, target, version = parts
            if method == "CONNECT":
                host, port = split_host_port(target, None)
                await self._tunnel(reader, writer, host, port)
            else:
                await self._forward(reader, writer, method, target, version, lines[1:])
        except BadRequest as exc:
            await respond(writer, 400, str(exc))

    async def _open(
        self, writer: asyncio.StreamWriter, entry: Entry, answer: bool = True
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Resolve, check and dial entry's destination; on failure answers the client itself
        (an HTTP error, or for a transparent connection nothing: it is just closed)."""
        try:
            target = await self._resolver.resolve(self.policy, entry.host, entry.port)
        except Refused as exc:
            self._log.block(entry, str(exc), 403)
            if answer:
                await respond(writer, 403, f"blocked: {exc}")
            return None
        try:
            return await dial(target)
        except TimeoutError:  # before OSError: it is one
            status, message = 504, f"timed out connecting to {target.host}:{target.port}"
        except OSError as exc:
            status, message = 502, f"cannot reach {target.host}:{target.port}: {exc.strerror}"
        entry.status = status
        self._log.finish(entry)
        if answer:
            await respond(writer, status, message)
        return None

    async def _serve_transparent(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        ip, port = original_destination(writer.get_extra_info("socket"))
        try:
            first = await asyncio.wait_for(reader.read(CHUNK), PEEK_TIMEOUT_S)
        except TimeoutError:  # the server speaks first (ssh, smtp): only the address is known
            first = b""
        entry = self._log.start("TCP", server_name(first) or ip, port)
        upstream = await self._open(writer, entry, answer=False)
        if upstream is None:
            return
        entry.status = "tunnel"
        if first:
            upstream[1].write(first)
            self._log.sent(entry, len(first))
        await self._pipe(reader, writer, upstream, entry, None)

    async def _tunnel(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int
    ) -> None:
        entry = self._log.start("CONNECT", host, port)
        upstream = await self._open(writer, entry)
        if upstream is None:
            return
        entry.status = "tunnel"
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await self._pipe(reader, writer, upstream, entry, None)

    async def _forward(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        method: str,
        target: str,
        version: str,
        headers: list[str],
    ) -> None:
        url = urlsplit(target)
        if url.scheme.lower() != "http" or not url.netloc:
            raise BadRequest("send absolute http:// URLs, or CONNECT for https")
        host, port = split_host_port(url.netloc.rpartition("@")[2], 80)
        entry = self._log.start(method, host, port)
        upstream = await self._open(writer, entry)
        if upstream is None:
            return
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        head = rewrite_head(method, path, version, headers, url.netloc.rpartition("@")[2])
        upstream[1].write(head)
        self._log.sent(entry, len(head))

        def status(chunk: bytes) -> None:
            if entry.status is None and chunk.startswith(b"HTTP/"):
                code = chunk.split(b" ", 2)[1:2]
                entry.status = int(code[0]) if code and code[0].isdigit() else None

        await self._pipe(reader, writer, upstream, entry, status)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        entry: Entry,
        first: Callable[[bytes], None] | None,
    ) -> None:
        """Copy both ways until the upstream side ends (a client EOF is passed on as EOF)."""
        up_reader, up_writer = upstream
        out = asyncio.ensure_future(
            pump(reader, up_writer, lambda n: self._log.sent(entry, n), None)
        )
        try:
            await pump(up_reader, writer, lambda n: self._log.received(entry, n), first)
        finally:
            out.cancel()
            with contextlib.suppress(BaseException):
                await out
            up_writer.close()
            self._log.finish(entry)


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


async def pump(
    src: asyncio.StreamReader,
    dst: asyncio.StreamWriter,
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


def rewrite_head(method: str, path: str, version: str, headers: list[str], netloc: str) -> bytes:
    """Origin-form request head for the upstream: hop-by-hop headers dropped, one request."""
    connection_tokens = set()
    for line in headers:
        name, _, value = line.partition(":")
        if name.strip().lower() == "connection":
            connection_tokens |= {t.strip().lower() for t in value.split(",")}
    kept = []
    has_host = False
    for line in headers:
        if not line:
            continue
        name = line.partition(":")[0].strip().lower()
        if name in _HOP_HEADERS or name in connection_tokens:
            continue
        has_host = has_host or name == "host"
        kept.append(line)
    if not has_host:
        kept.insert(0, f"Host: {netloc}")
    kept += ["Connection: close", f"X-Blaxel-Request-Id: {secrets.token_hex(16)}"]
    return ("\r\n".join([f"{method} {path} {version}", *kept]) + "\r\n\r\n").encode("latin-1")


async def respond(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    body = f"cove egress: {message}\n".encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with contextlib.suppress(ConnectionError):
        writer.write(head.encode() + body)
        await writer.drain()

"""One sandbox's HTTP proxy: plain-HTTP forwarding (absolute-form requests) and CONNECT.

Its listening socket lives in the sandbox's network namespace (127.0.0.1:3128 there); every
connection it accepts is served here, in the cove process, and dials out from the host
namespace to addresses checked by policy.Resolver. One request per client connection for plain
HTTP (the upstream is asked to close, and so is the client), so every request is checked.

HTTPS is tunnelled (the policy sees the CONNECT host only), except towards a host whose routing
rule must see inside (headers, body fields, secrets): then the proxy first opens TLS to the
upstream, verified against the host's CAs, and only then answers the CONNECT and speaks TLS to
the sandbox with a certificate from cove's CA (certs.py), so a secret only ever travels to the
genuine destination. Such a CONNECT must carry TLS and carries one request, sent upstream with
the rule applied. TLS on both sides of an interception is tls.TlsStream (ssl.MemoryBIO).

Transparent connections (redirected by the netns's nat rule, see local.py) carry no request:
the name comes from the TLS ClientHello's SNI or the HTTP Host header of the first bytes, else
the original destination address stands for the name. The proxy dials that name itself (the
policy and address rules apply to it as to any request), so naming an allowed host while
connecting to another address reaches the allowed host, not the other address. They are
tunnelled as they are (no routing rule applies to them).

A connection that moves no byte either way for `idle_timeout_s` is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import ssl
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from cove.domain.network import NetworkPolicy, Route, normalize_host
from cove.egress.certs import Authority
from cove.egress.http1 import (
    HEAD_LIMIT,
    BadRequest,
    RequestHead,
    parse_head,
    read_body,
    respond,
    rewrite_body,
    rewrites_body,
    split_host_port,
    status_of,
    upstream_head,
)
from cove.egress.log import Entry, RequestLog
from cove.egress.policy import Refused, Resolver
from cove.egress.sniff import original_destination, server_name
from cove.egress.streams import CHUNK, Reader, Stream, Writer, dial, pump, tls_to
from cove.egress.tls import TlsStream

log = logging.getLogger("cove.egress")
HEAD_TIMEOUT_S = 30.0
IDLE_TIMEOUT_S = 300.0
MAX_CONNECTIONS = 256  # per sandbox; each holds two host fds (client side and upstream)
PEEK_TIMEOUT_S = 2.0  # transparent: wait this long for a ClientHello / request line


class SandboxProxy:
    def __init__(
        self,
        resolver: Resolver,
        log: RequestLog,
        policy: NetworkPolicy,
        authority: Authority | None = None,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self.policy = policy
        self._resolver = resolver
        self._log = log
        self._authority = authority  # None: rules apply to plain HTTP only, HTTPS is tunnelled
        self._idle_s = idle_timeout_s
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
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError):
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
            req = await _read_head(reader)
            if req.method == "CONNECT":
                host, port = split_host_port(req.target, None)
                await self._tunnel(reader, writer, host, port, req.target)
            else:
                await self._forward(reader, writer, req)
        except BadRequest as exc:
            await respond(writer, exc.status, str(exc))

    async def _open(
        self, writer: Writer, entry: Entry, answer: bool = True, tls: bool = False
    ) -> Stream | None:
        """Resolve, check and dial entry's destination (over TLS verified against the host's
        CAs when `tls`); on failure answers the client itself (an HTTP error, or for a
        transparent connection nothing: it is just closed)."""
        try:
            target = await self._resolver.resolve(self.policy, entry.host, entry.port)
        except Refused as exc:
            self._log.block(entry, str(exc), 403)
            if answer:
                await respond(writer, 403, f"blocked: {exc}")
            return None
        try:
            stream = await dial(target)
            if tls and self._authority is not None:
                return await tls_to(stream, self._authority.upstream, target.host)
            return stream
        except ssl.SSLError as exc:  # before OSError: it is one
            detail = getattr(exc, "verify_message", None) or exc.reason or "handshake failed"
            status, message = 502, f"TLS with {target.host} failed: {detail}"
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
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        host: str,
        port: int,
        authority: str,
    ) -> None:
        entry = self._log.start("CONNECT", host, port)
        route = self.policy.route_for(host)
        intercept = route is not None and route.rewrites and self._authority is not None
        upstream = await self._open(writer, entry, tls=intercept)
        if upstream is None:
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if route is None or not intercept:
            entry.status = "tunnel"
            await self._pipe(reader, writer, upstream, entry, None)
            return
        try:
            await self._intercept(reader, writer, upstream, entry, route, authority)
        finally:
            upstream[1].close()
            self._log.finish(entry)

    async def _intercept(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: Stream,
        entry: Entry,
        route: Route,
        authority: str,
    ) -> None:
        """TLS towards the sandbox, then its one request with the rule applied."""
        assert self._authority is not None
        entry.intercepted = True
        context = self._authority.server_context(normalize_host(entry.host))
        client = TlsStream(reader, writer, context, server_side=True, limit=HEAD_LIMIT)
        try:
            await client.handshake(HEAD_TIMEOUT_S)
        except (ssl.SSLError, ConnectionError, TimeoutError):
            entry.status = "tls-failed"  # typically: the client does not trust cove's CA
            return
        try:
            req = await _read_head(client)
            path = req.target
            if not path.startswith("/"):
                url = urlsplit(path)
                if url.scheme.lower() != "https" or not url.netloc:
                    raise BadRequest("send origin-form requests inside a tunnel")
                path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            entry.method = req.method
            authority = authority.removesuffix(":443")  # the Host a client would have sent
            await self._exchange(client, client, upstream, entry, req, path, authority, route)
            if isinstance(upstream[0], TlsStream):  # an unclean end upstream stays unclean
                client.notify_on_close = upstream[0].clean_eof
        except BadRequest as exc:
            entry.status = exc.status
            await respond(client, exc.status, str(exc))
        finally:
            client.close()

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: RequestHead
    ) -> None:
        url = urlsplit(req.target)
        if url.scheme.lower() != "http" or not url.netloc:
            raise BadRequest("send absolute http:// URLs, or CONNECT for https")
        netloc = url.netloc.rpartition("@")[2]
        host, port = split_host_port(netloc, 80)
        entry = self._log.start(req.method, host, port)
        policy = self.policy
        upstream = await self._open(writer, entry)
        if upstream is None:
            return
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        route = policy.route_for(host)
        bypassed = policy.bypassed(host)
        await self._exchange(reader, writer, upstream, entry, req, path, netloc, route, bypassed)

    async def _exchange(
        self,
        reader: Reader,
        writer: Writer,
        upstream: Stream,
        entry: Entry,
        req: RequestHead,
        path: str,
        authority: str,
        route: Route | None,
        bypassed: bool = False,
    ) -> None:
        """Send the request upstream (rewritten by its rule), then relay the response."""
        body = None
        try:
            if rewrites_body(req, route):
                assert route is not None
                if "100-continue" in (req.header("expect") or "").lower():
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = rewrite_body(req, route, await read_body(reader, req))
            entry.request_id = None if bypassed else secrets.token_hex(16)
            head = upstream_head(req, path, authority, route, entry.request_id, body)
        except BaseException as exc:
            if isinstance(exc, BadRequest):
                entry.status = exc.status
            upstream[1].close()
            self._log.finish(entry)
            raise
        upstream[1].write(head + (body or b""))
        self._log.sent(entry, len(head) + len(body or b""))

        def status(chunk: bytes) -> None:
            if entry.status is None:
                entry.status = status_of(chunk)

        # a body read whole is sent: nothing more may follow it from the client
        await self._pipe(reader if body is None else None, writer, upstream, entry, status)

    async def _pipe(
        self,
        reader: Reader | None,
        writer: Writer,
        upstream: Stream,
        entry: Entry,
        first: Callable[[bytes], None] | None,
    ) -> None:
        """Copy both ways until the upstream side ends (a client EOF is passed on as EOF), or
        until nothing has moved either way for the idle timeout."""
        up_reader, up_writer = upstream
        loop = asyncio.get_running_loop()
        last = [loop.time()]

        def sent(n: int) -> None:
            last[0] = loop.time()
            self._log.sent(entry, n)

        def received(n: int) -> None:
            last[0] = loop.time()
            self._log.received(entry, n)

        back = asyncio.ensure_future(pump(up_reader, writer, received, first))
        out = None if reader is None else asyncio.ensure_future(pump(reader, up_writer, sent, None))
        try:
            while not back.done():
                idle_left = last[0] + self._idle_s - loop.time()
                if idle_left <= 0:
                    log.debug("egress: closing idle connection to %s", entry.host)
                    break
                await asyncio.wait({back}, timeout=idle_left)
            if back.done():
                back.result()
        finally:
            for task in (back, out):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            up_writer.close()
            self._log.finish(entry)


async def _read_head(reader: Reader) -> RequestHead:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
    except asyncio.LimitOverrunError:
        raise BadRequest("request head too large", 431) from None
    return parse_head(head)

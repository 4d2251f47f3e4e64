"""HTTP/1 pieces of the egress proxy: request heads, the head and body it sends upstream (with a
routing rule's headers, JSON body fields and resolved `{{SECRET:name}}` placeholders), errors.

Every request is sent upstream as the only one on its connection (`Connection: close`), so the
proxy never has to find where a response ends. Rule semantics (seed 002 "Proxy"): injected
headers are added next to the sandbox's own and never replace one it sent; injected body fields
are merged into POST/PUT/PATCH JSON objects, the sandbox's own fields winning on a clash; the
sandbox's own placeholders are resolved too, with the matching rule's secrets only.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from cove.domain.network import Route

HEAD_LIMIT = 64 * 1024
BODY_LIMIT = 16 * 1024 * 1024  # bodies the proxy must rewrite are read whole, up to this
INJECT_METHODS = {"POST", "PUT", "PATCH"}
_HOP = {"proxy-connection", "proxy-authorization", "connection", "keep-alive", "te", "upgrade"}
_FRAMING = {"content-length", "transfer-encoding", "expect"}  # replaced when the body is
_REASONS = {400: "Bad Request", 403: "Forbidden", 413: "Content Too Large"}
_REASONS |= {431: "Request Header Fields Too Large", 502: "Bad Gateway"}
_REASONS |= {503: "Service Unavailable", 504: "Gateway Timeout"}


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class RequestHead:
    method: str
    target: str
    version: str
    lines: list[str]  # header lines as received

    def header(self, name: str) -> str | None:
        for line in self.lines:
            key, _, value = line.partition(":")
            if key.strip().lower() == name:
                return value.strip()
        return None


def parse_head(head: bytes) -> RequestHead:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise BadRequest("malformed request line")
    return RequestHead(parts[0], parts[1], parts[2], [line for line in lines[1:] if line])


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


def upstream_head(
    req: RequestHead,
    path: str,
    authority: str,
    route: Route | None,
    request_id: str | None,
    body: bytes | None = None,
) -> bytes:
    """Origin-form head for the upstream: hop-by-hop headers dropped, the rule applied, one
    request per connection. `body` is the rewritten body when the proxy re-frames it."""
    tokens = {t.strip().lower() for t in (req.header("connection") or "").split(",")}
    kept, present = [], set()
    for line in req.lines:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        if key in _HOP or key in tokens or (body is not None and key in _FRAMING):
            continue
        if route is not None:
            value = _resolved(route, name.strip(), value.strip())
            line = f"{name.strip()}: {value}"
        present.add(key)
        kept.append(line)
    if "host" not in present:
        kept.insert(0, f"Host: {authority}")
    for name, value in route.headers if route is not None else ():
        if name.lower() not in present:  # never replaces one the sandbox sent
            kept.append(f"{name}: {_resolved(route, name, value)}")
    if body is not None:
        if "content-type" not in present and body:
            kept.append("Content-Type: application/json")
        kept.append(f"Content-Length: {len(body)}")
    kept.append("Connection: close")
    if request_id is not None:
        kept.append(f"X-Blaxel-Request-Id: {request_id}")
    lines = [f"{req.method} {path} {req.version}", *kept, "", ""]
    return b"\r\n".join(_wire(line) for line in lines)


def _wire(line: str) -> bytes:
    """Received lines were decoded as latin-1 and go back byte for byte; a line that gained
    other characters from a rule goes as UTF-8."""
    try:
        return line.encode("latin-1")
    except UnicodeEncodeError:
        return line.encode()


def _resolved(route: Route, name: str, value: str) -> str:
    out = route.resolve(value)
    if any(c in out for c in "\r\n\0"):  # a body-only secret (a PEM key, …) in a header
        raise BadRequest(f"header {name}: a secret it names cannot go into a header")
    return out


# -- bodies --------------------------------------------------------------------------------------


def _textual(ctype: str) -> bool:
    return not ctype or "json" in ctype or ctype.startswith("text/") or "urlencoded" in ctype


def rewrites_body(req: RequestHead, route: Route | None) -> bool:
    """Whether the proxy must read this request's body whole to rewrite it; otherwise the body
    streams through untouched."""
    if route is None or not (route.body or route.secrets):
        return False
    if (req.header("content-encoding") or "identity").lower() != "identity":
        return False
    ctype = (req.header("content-type") or "").lower()
    if route.body and req.method in INJECT_METHODS and (not ctype or "json" in ctype):
        return True
    length = req.header("content-length") or "0"
    has_body = req.header("transfer-encoding") is not None or length != "0"
    return bool(route.secrets) and has_body and _textual(ctype)


async def read_body(reader: Any, req: RequestHead) -> bytes:
    """The whole request body (Content-Length or chunked); BadRequest when malformed or larger
    than BODY_LIMIT."""
    coding = (req.header("transfer-encoding") or "").lower()
    if coding:
        if coding != "chunked":
            raise BadRequest(f"transfer-encoding {coding!r} is not supported here")
        return await _read_chunked(reader)
    length_text = req.header("content-length") or "0"
    if not length_text.isdigit():
        raise BadRequest("bad content-length")
    if int(length_text) > BODY_LIMIT:
        raise BadRequest(f"a body this rule rewrites may be {BODY_LIMIT} bytes at most", 413)
    return await reader.readexactly(int(length_text))


async def _read_chunked(reader: Any) -> bytes:
    body = bytearray()
    while True:
        size_line = (await reader.readuntil(b"\r\n")).split(b";")[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise BadRequest("bad chunk size") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers: dropped
                pass
            return bytes(body)
        if len(body) + size > BODY_LIMIT:
            raise BadRequest(f"a body this rule rewrites may be {BODY_LIMIT} bytes at most", 413)
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequest("bad chunk")


def rewrite_body(req: RequestHead, route: Route, body: bytes) -> bytes:
    """The rule's fields merged into a JSON object body, placeholders resolved."""
    ctype = (req.header("content-type") or "").lower()
    if route.body and req.method in INJECT_METHODS and (not ctype or "json" in ctype):
        try:
            data = json.loads(body) if body.strip() else {}
        except ValueError:
            data = None
        if isinstance(data, dict):
            merged = {**route.body, **data}  # the sandbox's own fields win
            return json.dumps(route.resolve_json(merged), ensure_ascii=False).encode()
    if b"{{SECRET:" not in body:
        return body
    if "json" in ctype:
        try:
            return json.dumps(route.resolve_json(json.loads(body)), ensure_ascii=False).encode()
        except ValueError:
            pass
    try:
        return route.resolve(body.decode()).encode()
    except UnicodeDecodeError:
        return body


# -- answers ------------------------------------------------------------------------------------


def status_of(chunk: bytes) -> int | None:
    """The status code of a response whose first bytes are `chunk`."""
    if not chunk.startswith(b"HTTP/"):
        return None
    code = chunk.split(b" ", 2)[1:2]
    return int(code[0]) if code and code[0].isdigit() else None


async def respond(writer: Any, status: int, message: str) -> None:
    """A short plain-text answer (writer: a StreamWriter or a TlsStream)."""
    body = f"cove egress: {message}\n".encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with contextlib.suppress(ConnectionError):
        writer.write(head.encode() + body)
        await writer.drain()

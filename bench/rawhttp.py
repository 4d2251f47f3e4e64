"""A minimal asyncio HTTP/1.1 keep-alive client for load generation.

httpx spends ~4 ms of CPU per request; with 100 concurrent clients on a 2-core host the
load generator, not the server, set the latency. This client does only what cove's JSON
endpoints need: one connection, request with Content-Length, response with Content-Length.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit


class RawClient:
    def __init__(self, base: str, headers: dict[str, str]) -> None:
        parts = urlsplit(base)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._headers = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        path = urlsplit(url).path if url.startswith("http") else url
        payload = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self._host}\r\n{self._headers}"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        self._writer.write(head.encode() + payload)
        return await self._response()

    async def _response(self) -> tuple[int, Any]:
        assert self._reader is not None
        status_line = await self._reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        data = await self._reader.readexactly(length) if length else b""
        return status, json.loads(data) if data[:1] in (b"{", b"[") else data

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()


class SyncClient:
    """Blocking keep-alive client on http.client (~0.1 ms per request, httpx ~1 ms)."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        import http.client

        parts = urlsplit(base)
        self._conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80)
        self._headers = {**headers, "Content-Type": "application/json"}

    def request(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        path = urlsplit(url).path if url.startswith("http") else url
        payload = None if body is None else json.dumps(body).encode()
        self._conn.request(method, path, body=payload, headers=self._headers)
        response = self._conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data[:1] in (b"{", b"[") else data

    def close(self) -> None:
        self._conn.close()


class Client:
    """http.client connection with fixed headers: raw responses, or JSON asserted 200."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        import http.client

        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80)
        self._headers = headers

    def call(self, method: str, path: str, body: object = None, **headers: str):  # type: ignore[no-untyped-def]
        payload = None if body is None else json.dumps(body).encode()
        self.conn.request(method, path, body=payload, headers={**self._headers, **headers})
        return self.conn.getresponse()

    def json(self, method: str, path: str, body: object = None) -> Any:
        resp = self.call(method, path, body)
        data = resp.read()
        assert resp.status == 200, (resp.status, data)
        return json.loads(data)

#!/usr/bin/env python3
"""Filesystem API: 1 MiB write+read over HTTP, 100 parallel reads, and find / content search
over a 10,000-file tree next to running `find` / `rg` directly on the same tree (the floor).

Runs a real `cove serve`. Prints one JSON line per metric: {"name", "p50", "p95", "n", "unit"}.

    .venv/bin/python bench/files_api.py [--n 200] [--files 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from report import emit, timed  # noqa: E402
from server import KEYS, CoveServer  # noqa: E402

HEADERS = {"Authorization": f"Bearer {KEYS['ws-a']}"}
RAW = {"Accept": "application/octet-stream"}


def multipart(blob: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="b"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + blob
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


class Raw:
    """http.client keep-alive connection: httpx costs milliseconds of client CPU per request
    on this 2-core host, which would be measured instead of the server."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port)

    def request(
        self, method: str, path: str, body: bytes | None = None, **headers: str
    ) -> tuple[int, bytes]:
        self.conn.request(method, path, body=body, headers={**HEADERS, **headers})
        r = self.conn.getresponse()
        return r.status, r.read()


def write_read_1mib(base: str, url: str, n: int) -> None:
    raw = Raw(base)
    blob = os.urandom(1 << 20)
    body, ctype = multipart(blob)

    def once() -> None:
        w = raw.request("PUT", url + "/filesystem//tmp/bench.bin", body, **{"Content-Type": ctype})
        r = raw.request("GET", url + "/filesystem//tmp/bench.bin", **RAW)
        assert w[0] == 200 and r[1] == blob, (w, r[0])

    once()
    emit("fs_write_read_1mib_http", timed(once, n))
    doc = json.dumps({"content": "x" * (1 << 20)}).encode()

    def json_once() -> None:
        raw.request(
            "PUT", url + "/filesystem//tmp/bench.txt", doc, **{"Content-Type": "application/json"}
        )
        status, out = raw.request("GET", url + "/filesystem//tmp/bench.txt")
        assert status == 200 and len(json.loads(out)["content"]) == 1 << 20

    emit("fs_write_read_1mib_json", timed(json_once, n))


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bytes:
    writer.write(head)
    header = await reader.readuntil(b"\r\n\r\n")
    length = int(header.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return await reader.readexactly(length)


async def parallel_reads(base: str, url: str, parallel: int, rounds: int) -> None:
    raw = Raw(base)
    body, ctype = multipart(os.urandom(64 * 1024))
    assert (
        raw.request("PUT", url + "/filesystem//tmp/p.bin", body, **{"Content-Type": ctype})[0]
        == 200
    )
    parts = urlsplit(base)
    auth = "".join(f"{k}: {v}\r\n" for k, v in {**HEADERS, **RAW}.items())
    head = f"GET {url}/filesystem//tmp/p.bin HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()
    conns = [await asyncio.open_connection(parts.hostname, parts.port) for _ in range(parallel)]
    per_request: list[float] = []
    walls: list[float] = []

    async def one(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        t0 = time.perf_counter()
        assert len(await _get(*conn, head)) == 64 * 1024
        per_request.append((time.perf_counter() - t0) * 1000)

    for _ in range(rounds):
        t0 = time.perf_counter()
        await asyncio.gather(*(one(c) for c in conns))
        walls.append((time.perf_counter() - t0) * 1000)
    for _reader, writer in conns:
        writer.close()
    emit("fs_parallel_read_64kib_request", per_request, concurrency=parallel)
    emit("fs_parallel_read_64kib_batch_wall", walls, concurrency=parallel)


def make_tree(client: httpx.Client, url: str, files: int) -> None:
    per_dir = 100
    for d in range(0, files, per_dir * 10):
        batch = {
            f"pkg{i // per_dir}/mod{i % per_dir}.{'py' if i % 2 else 'txt'}": f"line one\nvalue = {i}\n# TODO {i}\n"
            for i in range(d, min(files, d + per_dir * 10))
        }
        r = client.put(url + "/filesystem/tree//bench", json={"files": batch})
        assert r.status_code == 200, r.text


def search_vs_floor(base: str, url: str, host_tree: Path, n: int, files: int) -> None:
    raw = Raw(base)

    def api_find() -> None:
        _status, body = raw.request(
            "GET", f"{url}/filesystem-find//bench?patterns=*.py&maxResults={files}"
        )
        assert json.loads(body)["total"] == files // 2, body[:200]

    def api_grep() -> None:
        query = "query=TODO%204242&caseSensitive=true"
        _status, body = raw.request("GET", f"{url}/filesystem-content-search//bench?{query}")
        assert json.loads(body)["total"] >= 1, body[:200]

    def host(argv: list[str]) -> None:
        subprocess.run(argv, cwd=host_tree, stdout=subprocess.DEVNULL, check=False)

    for name, fn in (
        ("fs_find_10k_api", api_find),
        ("fs_find_10k_host_find", lambda: host(["find", ".", "-type", "f", "-name", "*.py"])),
        ("fs_search_10k_api", api_grep),
        ("fs_search_10k_host_rg", lambda: host(["rg", "--json", "-F", "-s", "TODO 4242", "."])),
    ):
        fn()  # warm the page cache and the code path
        emit(name, timed(fn, n), files=files)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--parallel", type=int, default=100)
    args = parser.parse_args()

    data_dir = Path("/var/tmp/cove-bench") / uuid.uuid4().hex[:8]
    data_dir.mkdir(parents=True)
    server = CoveServer(data_dir).start()
    try:
        with httpx.Client(base_url=server.url, headers=HEADERS, timeout=120) as client:
            r = client.post(
                "/v0/sandboxes",
                json={"metadata": {"name": "fsbench"}, "spec": {"runtime": {"memory": 1024}}},
            )
            assert r.status_code == 200, r.text
            url = r.json()["metadata"]["url"].removeprefix(server.url)
            write_read_1mib(server.url, url, args.n)
            asyncio.run(parallel_reads(server.url, url, args.parallel, max(3, args.n // 20)))
            make_tree(client, url, args.files)
            # The same tree seen from the host (warm-pool sandboxes keep their runtime id).
            host_tree = next(data_dir.glob("sandboxes/*/rootfs/bench"))
            search_vs_floor(server.url, url, host_tree, max(10, args.n // 10), args.files)
            client.delete("/v0/sandboxes/fsbench")
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

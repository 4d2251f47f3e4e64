#!/usr/bin/env python3
"""Preview traffic: request latency and download throughput through a preview URL (public,
private with a token, host form) next to the same app hit directly inside the sandbox, same run.

Runs a real `cove serve`. One JSON line per metric: {"name", "p50", "p95", "n", "unit", ...}.
The in-sandbox baseline is a python http.client loop in the sandbox against 127.0.0.1, so it
pays no sandbox boundary, no cove and no proxy hop: the difference is what a preview costs.

    .venv/bin/python bench/previews.py [--n 300] [--mb 64]
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from rawhttp import Client  # noqa: E402
from report import emit, timed  # noqa: E402
from server import KEYS, served  # noqa: E402

HEADERS = {"Authorization": f"Bearer {KEYS['ws-a']}", "Content-Type": "application/json"}
PORT = 3000

INSIDE = r"""
import http.client, json, sys, time
n, path = int(sys.argv[1]), sys.argv[2]
conn = http.client.HTTPConnection("127.0.0.1", 3000)
def once():
    conn.request("GET", path)
    r = conn.getresponse()
    return len(r.read())
for _ in range(10):
    once()
lat = []
for _ in range(n):
    t0 = time.perf_counter(); once(); lat.append((time.perf_counter() - t0) * 1000)
t0 = time.perf_counter(); size = 0
conn.request("GET", "/big.bin"); r = conn.getresponse()
while chunk := r.read(1 << 20):
    size += len(chunk)
secs = time.perf_counter() - t0
print(json.dumps({"lat": lat, "mbps": size / secs / 1e6, "bytes": size}))
"""

APP = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for the in-sandbox baseline
    disable_nagle_algorithm = True  # else headers + body writes meet delayed ACKs (40 ms)
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path == "/big.bin":
            size = int(open("/tmp/big.size").read())
            self.send_response(200)
            self.send_header("content-length", str(size))
            self.end_headers()
            block = b"x" * (1 << 20)
            for _ in range(size >> 20):
                self.wfile.write(block)
            return
        body = b"ok"
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(body)
ThreadingHTTPServer(("0.0.0.0", 3000), H).serve_forever()
"""


def run_in(c: Client, sbx: str, command: str, stdin: str | None = None) -> str:
    body: dict[str, object] = {"command": command, "waitForCompletion": True}
    r = c.json("POST", sbx + "/process", body)
    assert r["exitCode"] == 0, r
    return r["stdout"]


def write_file(c: Client, sbx: str, path: str, text: str) -> None:
    resp = c.call("PUT", sbx + "/filesystem" + path, {"content": text})
    resp.read()
    assert resp.status == 200, resp.status


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--mb", type=int, default=64)
    args = ap.parse_args()
    with served() as srv:
        c = Client(srv.url, HEADERS)
        name = "bench-" + uuid.uuid4().hex[:6]
        created = c.json(
            "POST",
            "/v0/sandboxes",
            {"metadata": {"name": name}, "spec": {"runtime": {"memory": 1024}}},
        )
        sbx = "/sbx/" + created["metadata"]["url"].rstrip("/").rsplit("/", 1)[-1]
        write_file(c, sbx, "/tmp/app.py", APP)
        write_file(c, sbx, "/tmp/inside.py", INSIDE)
        write_file(c, sbx, "/tmp/big.size", str(args.mb << 20))
        c.json("POST", sbx + "/process", {"command": "python3 /tmp/app.py", "waitForPorts": [PORT]})
        base = f"/v0/sandboxes/{name}/previews"
        pub = c.json(
            "POST", base, {"metadata": {"name": "pub"}, "spec": {"port": PORT, "public": True}}
        )
        priv = c.json("POST", base, {"metadata": {"name": "priv"}, "spec": {"port": PORT}})
        expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        token = c.json("POST", base + "/priv/tokens", {"spec": {"expiresAt": expires}})
        tok = {"X-Blaxel-Preview-Token": token["spec"]["token"]}

        inside = json.loads(run_in(c, sbx, f"python3 /tmp/inside.py {args.n} /"))
        emit("baseline_inside_sandbox_http_get", inside["lat"], note="keep-alive, 127.0.0.1")

        def via(url: str, headers: dict[str, str]):  # type: ignore[no-untyped-def]
            u = urlsplit(url)
            conn = http.client.HTTPConnection("127.0.0.1", u.port)
            host = {"Host": u.netloc}

            def once() -> None:
                conn.request("GET", u.path + "/", headers={**host, **headers})
                r = conn.getresponse()
                assert r.read() == b"ok" and r.status == 200, r.status

            return conn, once

        for label, url, headers in (
            ("preview_public_path_http_get", pub["spec"]["url"], {}),
            ("preview_private_path_http_get", priv["spec"]["url"], tok),
            ("preview_public_host_http_get", pub["spec"]["hostUrl"], {}),
        ):
            _, once = via(url, headers)
            emit(
                label,
                timed(once, args.n),
                note="client keep-alive; upstream one connection per request",
            )
        _, once = via(
            created["metadata"]["url"] + "/port/3000", {"Authorization": HEADERS["Authorization"]}
        )
        emit("port_proxy_http_get", timed(once, args.n), note="same app through /port/3000")

        emit(
            "baseline_inside_sandbox_download_throughput",
            [inside["mbps"]],
            "MB/s",
            bytes=inside["bytes"],
        )
        u = urlsplit(pub["spec"]["url"])
        conn = http.client.HTTPConnection("127.0.0.1", u.port)
        t0 = time.perf_counter()
        conn.request("GET", u.path + "/big.bin")
        r = conn.getresponse()
        size = sum(len(b) for b in iter(lambda: r.read(1 << 20), b""))
        secs = time.perf_counter() - t0
        emit("preview_download_throughput", [size / secs / 1e6], "MB/s", bytes=size)
        c.call("DELETE", "/v0/sandboxes/" + name).read()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Egress: request latency and download throughput from inside a sandbox through cove's proxy
(plain HTTP, an HTTPS tunnel, HTTPS intercepted for a routing rule) next to the same client
talking to the same upstream without the proxy, same run.

Runs a real `cove serve` and, on the host, one small upstream app (HTTP and HTTPS with a CA of
this bench's own, given to cove as COVE_EGRESS_TEST_CA; names mapped by COVE_EGRESS_TEST_HOSTS).
"Direct" is the same client script run on the host against that upstream, and against a copy of
the app inside the sandbox (no boundary, no proxy). Every request opens a new connection on
every path, because the proxy sends one request per upstream connection. One JSON line per
metric: {"name", "p50", "p95", "n", "unit", ...}.

    .venv/bin/python bench/egress.py [--n 300] [--mb 64]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import uuid
from http.server import ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from rawhttp import Client  # noqa: E402
from report import emit  # noqa: E402
from server import KEYS, CoveServer  # noqa: E402
from test_egress_rules import TLS_NAMES, TlsServer, _certs  # noqa: E402

HEADERS = {"Authorization": f"Bearer {KEYS['ws-a']}", "Content-Type": "application/json"}
TLS_TUNNEL, TLS_RULE = TLS_NAMES[1], TLS_NAMES[0]  # certificate names of the test upstream

APP = r"""
from http.server import BaseHTTPRequestHandler
class App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers + body writes meet delayed ACKs (40 ms)
    def log_message(self, *a): pass
    def do_GET(self):
        size = int(self.path.split("n=")[1]) if "n=" in self.path else 2
        self.send_response(200)
        self.send_header("content-length", str(size))
        self.end_headers()
        block = b"x" * min(size, 1 << 20)
        while size > 0:
            self.wfile.write(block[:size]); size -= len(block)
if __name__ == "__main__":
    import sys; from http.server import ThreadingHTTPServer
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), App).serve_forever()
"""

# argv: json {"url", "proxy" (host:port or ""), "cafile", "check_hostname", "n", "bytes"}
CLIENT = r"""
import http.client, json, ssl, sys, time
from urllib.parse import urlsplit
a = json.loads(sys.argv[1]); u = urlsplit(a["url"])
ctx = ssl.create_default_context(cafile=a["cafile"] or None)
ctx.check_hostname = a["check_hostname"]
def conn():
    if a["proxy"]:
        ph, pp = a["proxy"].split(":")
        if u.scheme == "http":
            return http.client.HTTPConnection(ph, int(pp)), a["url"].split("?")[0]
        c = http.client.HTTPSConnection(ph, int(pp), context=ctx); c.set_tunnel(u.hostname, 443)
        return c, u.path
    cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    kw = {"context": ctx} if u.scheme == "https" else {}
    return cls(u.hostname, u.port, **kw), u.path
def get(query=""):
    c, path = conn(); c.request("GET", path + query); r = c.getresponse()
    size = 0
    while chunk := r.read(1 << 20):
        size += len(chunk)
    assert r.status == 200, r.status
    c.close(); return size
for _ in range(10):
    get()
lat = []
for _ in range(a["n"]):
    t0 = time.perf_counter(); get(); lat.append((time.perf_counter() - t0) * 1000)
t0 = time.perf_counter(); size = get(f"?n={a['bytes']}")
print(json.dumps({"lat": lat, "mbps": size / (time.perf_counter() - t0) / 1e6, "bytes": size}))
"""


def serve(httpd: ThreadingHTTPServer) -> int:
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd.server_address[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--mb", type=int, default=64)
    args = ap.parse_args()
    namespace: dict = {}
    exec(APP, namespace)  # the same app on the host and inside the sandbox
    work = Path(tempfile.mkdtemp(prefix="cove-bench-egress-"))
    ca, server_pem = _certs(work)
    plain = ThreadingHTTPServer(("127.0.0.1", 0), namespace["App"])
    tls = TlsServer(("127.0.0.1", 0), namespace["App"])
    tls.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.context.load_cert_chain(server_pem)
    http_port, tls_port = serve(plain), serve(tls)
    hosts = f"plain.bench=127.0.0.1:{http_port},"
    hosts += ",".join(f"{n}=127.0.0.1:{tls_port}" for n in TLS_NAMES)
    data = Path(os.environ.get("COVE_TEST_DIR", "/var/tmp/cove-tests")) / uuid.uuid4().hex[:8]
    srv = CoveServer(data, COVE_EGRESS_TEST_HOSTS=hosts, COVE_EGRESS_TEST_CA=str(ca)).start()
    try:
        c = Client(srv.url, HEADERS)
        name = "bench-" + uuid.uuid4().hex[:6]
        route = {"destinations": [TLS_RULE], "headers": {"X-Key": "{{SECRET:k}}"}}
        network = {"proxy": {"routing": [{**route, "secrets": {"k": "bench-secret"}}]}}
        spec = {"runtime": {"memory": 1024}, "network": network}
        created = c.json("POST", "/v0/sandboxes", {"metadata": {"name": name}, "spec": spec})
        sbx = "/sbx/" + created["metadata"]["url"].rstrip("/").rsplit("/", 1)[-1]
        for path, text in (
            ("/tmp/app.py", APP),
            ("/tmp/client.py", CLIENT),
            ("/tmp/ca.pem", ca.read_text()),
        ):
            resp = c.call("PUT", sbx + "/filesystem" + path, {"content": text})
            resp.read()
            assert resp.status == 200, resp.status
        c.json(
            "POST",
            sbx + "/process",
            {"command": "python3 /tmp/app.py 3000", "waitForPorts": [3000]},
        )
        size = args.mb << 20

        def inside(url: str, proxy: str, cafile: str = "") -> dict:
            opts = {"url": url, "proxy": proxy, "cafile": cafile, "check_hostname": True}
            argv = json.dumps({**opts, "n": args.n, "bytes": size})
            body = {"command": f"python3 /tmp/client.py '{argv}'", "waitForCompletion": True}
            r = c.json("POST", sbx + "/process", body)
            assert r["exitCode"] == 0, r
            out = json.loads(r["stdout"])
            assert out["bytes"] == size, out["bytes"]  # nothing lost on the way
            return out

        def host(url: str, cafile: str = "") -> dict:
            # the certificate names the mapped hosts, not 127.0.0.1: chain checked, name not
            opts = {"url": url, "proxy": "", "cafile": cafile, "check_hostname": not cafile}
            argv = json.dumps({**opts, "n": args.n, "bytes": size})
            out = subprocess.run(
                [sys.executable, "-c", CLIENT, argv], capture_output=True, check=True
            )
            return json.loads(out.stdout)  # type: ignore[no-any-return]

        runs = {
            "direct_inside_sandbox_http": inside("http://127.0.0.1:3000/s", ""),
            "direct_host_http": host(f"http://127.0.0.1:{http_port}/s"),
            "proxied_http": inside("http://plain.bench/s", "127.0.0.1:3128"),
            "direct_host_https": host(f"https://127.0.0.1:{tls_port}/s", str(ca)),
            "proxied_https_tunnel": inside(
                f"https://{TLS_TUNNEL}/s", "127.0.0.1:3128", "/tmp/ca.pem"
            ),
            "proxied_https_intercepted": inside(f"https://{TLS_RULE}/s", "127.0.0.1:3128"),
        }
        note = "GET, new connection per request, client inside the sandbox unless 'host'"
        for label, result in runs.items():
            emit(f"egress_{label}_get", result["lat"], note=note)
        for label, result in runs.items():
            emit(f"egress_{label}_download", [result["mbps"]], "MB/s", bytes=result["bytes"])
        c.call("DELETE", "/v0/sandboxes/" + name).read()
    finally:
        rc = srv.stop()
        plain.shutdown()
        tls.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    if rc == 0:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()

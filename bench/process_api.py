#!/usr/bin/env python3
"""The process API over HTTP: exec round trip, log streaming throughput, port proxy round trip,
each next to a same-run host baseline (no sandbox, no HTTP).

Runs a real `cove serve` and measures it like a client would. One JSON line per metric:
{"name", "p50", "p95", "n", "unit", ...}.

    .venv/bin/python bench/process_api.py [--n 200] [--mb 64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from rawhttp import Client  # noqa: E402
from report import emit, timed  # noqa: E402
from server import KEYS, served  # noqa: E402

HEADERS = {"Authorization": f"Bearer {KEYS['ws-a']}", "Content-Type": "application/json"}
LINE = "0123456789abcdef" * 7 + "\n"  # 113-byte lines: the streams frame output per line


def exec_round_trip(c: Client, sbx: str, n: int) -> None:
    def once() -> None:
        r = c.json("POST", sbx + "/process", {"command": "echo hi", "waitForCompletion": True})
        assert r["stdout"] == "hi\n", r

    emit("exec_http_echo", timed(once, n))
    emit(
        "baseline_host_fork_exec_echo",
        timed(lambda: subprocess.run(["/bin/echo", "hi"], capture_output=True), n),
    )


def _producer(mb: int) -> str:
    lines = mb * 1024 * 1024 // len(LINE)
    return f"yes {LINE.strip()} | head -n {lines}"


def stream_throughput(c: Client, sbx: str, mb: int) -> None:
    total = mb * 1024 * 1024 // len(LINE) * len(LINE)
    # NDJSON exec stream: start + follow + result in one request. The client only collects
    # bytes while timed (parsing 600k JSON lines here would measure this client, not cove).
    t0 = time.perf_counter()
    resp = c.call(
        "POST",
        sbx + "/process",
        {"command": _producer(mb), "waitForCompletion": True},
        Accept="text/event-stream",
    )
    raw = list(iter(lambda: resp.read(1 << 20), b""))
    secs = time.perf_counter() - t0
    got = dropped = 0
    for line in b"".join(raw).splitlines():
        event = json.loads(line)
        if event["type"] == "stdout":
            got += len(event["data"]) + 1
        dropped += event["type"] == "error"
    emit(
        "exec_stream_ndjson_throughput",
        [got / secs / 1e6],
        "MB/s",
        bytes=got,
        produced=total,
        overflow_events=dropped,
        note="process output delivered per second; a reader more than 4 MiB behind the "
        "process skips ahead (overflow_events)",
    )
    # Text log stream of a process that already finished: a pure backfill read (≤ 4 MiB held).
    name = "p-" + uuid.uuid4().hex[:6]
    c.json(
        "POST", sbx + "/process", {"command": _producer(4), "name": name, "waitForCompletion": True}
    )
    t0 = time.perf_counter()
    body = c.call("GET", f"{sbx}/process/{name}/logs/stream").read()
    secs = time.perf_counter() - t0
    emit("logs_stream_backfill_throughput", [len(body) / secs / 1e6], "MB/s", bytes=len(body))
    # Baseline: the same bytes through a host pipe into this process, no sandbox, no HTTP.
    t0 = time.perf_counter()
    proc = subprocess.Popen(["sh", "-c", _producer(mb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    n = sum(len(chunk) for chunk in iter(lambda: proc.stdout.read(65536), b""))
    proc.wait()
    emit("baseline_host_pipe_throughput", [n / (time.perf_counter() - t0) / 1e6], "MB/s")


def proxy_round_trip(c: Client, sbx: str, n: int) -> None:
    c.json(
        "POST",
        sbx + "/process",
        {"command": "cd /tmp && exec python3 -m http.server 8000", "waitForPorts": [8000]},
    )

    def once() -> None:
        resp = c.call("GET", sbx + "/port/8000/")
        resp.read()
        assert resp.status == 200

    emit("port_proxy_http_get", timed(once, n), note="upstream is python3 -m http.server")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--mb", type=int, default=64)
    args = ap.parse_args()
    with served() as srv:
        c = Client(srv.url, HEADERS)
        created = c.json(
            "POST",
            "/v0/sandboxes",
            {
                "metadata": {"name": "bench-" + uuid.uuid4().hex[:6]},
                "spec": {"runtime": {"memory": 1024}},
            },
        )
        sbx = "/sbx/" + created["metadata"]["url"].rstrip("/").rsplit("/", 1)[-1]
        exec_round_trip(c, sbx, args.n)
        stream_throughput(c, sbx, args.mb)
        proxy_round_trip(c, sbx, args.n)
        c.call("DELETE", "/v0/sandboxes/" + created["metadata"]["name"]).read()


if __name__ == "__main__":
    main()

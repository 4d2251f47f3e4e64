#!/usr/bin/env python3
"""Time to interactive: create -> first exec, burst creates, exec round trip, idle density.

Runs a real `cove serve`, measures it over HTTP like a client would, and measures the bare
floor (shared/tools/bench-anchors: fork+exec, bwrap, crun run, crun exec) in the same run.
Prints one JSON line per metric: {"name", "p50", "p95", "n", "unit", ...}.

    .venv/bin/python bench/tti.py [--n 100] [--burst 100] [--idle 1000] [--no-anchors]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from rawhttp import RawClient, SyncClient  # noqa: E402
from report import emit  # noqa: E402
from server import KEYS, CoveServer  # noqa: E402

ANCHORS = ROOT.parent / "shared" / "tools" / "bench-anchors"
POOL_FILL_S = 5.0
HEADERS = {"Authorization": f"Bearer {KEYS['ws-a']}"}


def create_body(name: str) -> dict:
    return {"metadata": {"name": name}, "spec": {"runtime": {"memory": 256}}}


def exec_echo(client: SyncClient, url: str) -> None:
    status, out = client.request(
        "POST", url + "/process", {"command": "echo hi", "waitForCompletion": True}
    )
    assert status == 200 and out["stdout"] == "hi\n", out


def sequential(client: SyncClient, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        name = "tti-" + uuid.uuid4().hex[:8]
        t0 = time.perf_counter()
        status, body = client.request("POST", "/v0/sandboxes", create_body(name))
        assert status == 200, body
        exec_echo(client, body["metadata"]["url"])
        samples.append((time.perf_counter() - t0) * 1000)
        client.request("DELETE", f"/v0/sandboxes/{name}")
        time.sleep(0.02)  # a user's think time between creates
    return samples


async def burst(base: str, n: int) -> list[float]:
    """n clients at once, each on its own connection: create, then first exec."""

    async def one(i: int) -> float:
        client = RawClient(base, HEADERS)
        try:
            name = f"burst-{i}-" + uuid.uuid4().hex[:6]
            t0 = time.perf_counter()
            status, body = await client.request("POST", "/v0/sandboxes", create_body(name))
            assert status == 200, body
            status, out = await client.request(
                "POST",
                body["metadata"]["url"] + "/process",
                {"command": "echo hi", "waitForCompletion": True},
            )
            assert out["stdout"] == "hi\n", out
            return (time.perf_counter() - t0) * 1000
        finally:
            await client.close()

    samples = list(await asyncio.gather(*(one(i) for i in range(n))))
    cleaner = RawClient(base, HEADERS)
    _, listed = await cleaner.request("GET", "/v0/sandboxes")
    for sandbox in listed:
        await cleaner.request("DELETE", f"/v0/sandboxes/{sandbox['metadata']['name']}")
    await cleaner.close()
    return samples


def exec_round_trip(client: SyncClient, n: int) -> list[float]:
    name = "rt-" + uuid.uuid4().hex[:8]
    url = client.request("POST", "/v0/sandboxes", create_body(name))[1]["metadata"]["url"]
    for _ in range(10):
        exec_echo(client, url)
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        exec_echo(client, url)
        samples.append((time.perf_counter() - t0) * 1000)
    client.request("DELETE", f"/v0/sandboxes/{name}")
    return samples


def mem_available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    raise RuntimeError("no MemAvailable")


def idle_density(client: SyncClient, n: int) -> dict:
    before = mem_available_kib()
    names = []
    t0 = time.perf_counter()
    for i in range(n):
        name = f"idle-{i}"
        status, body = client.request("POST", "/v0/sandboxes", create_body(name))
        if status != 200:
            print(json.dumps({"name": "idle_create_failed", "at": i, "body": str(body)[:300]}))
            break
        names.append(name)
    elapsed = time.perf_counter() - t0
    time.sleep(2)
    used = before - mem_available_kib()
    url = client.request("GET", f"/v0/sandboxes/{names[-1]}")[1]["metadata"]["url"]
    exec_echo(client, url)  # the last one still answers
    row = {
        "name": "idle_sandboxes",
        "count": len(names),
        "host_kib_per_sandbox": round(used / max(1, len(names)), 1),
        "create_s": round(elapsed, 1),
        "unit": "KiB",
        "p50": round(used / max(1, len(names)), 1),
        "p95": None,
        "n": len(names),
    }
    print(json.dumps(row), flush=True)
    for name in names:
        client.request("DELETE", f"/v0/sandboxes/{name}")
    return row


def anchors(n: int) -> dict[str, float]:
    """Bare-tool floor from the shared kit, same run; {} when it cannot run here."""
    if not (ANCHORS / "measure.sh").exists():
        return {}
    subprocess.run([str(ANCHORS / "setup.sh")], check=True, stdout=subprocess.DEVNULL)
    out = subprocess.run(
        [
            str(ANCHORS / "measure.sh"),
            "-n",
            str(n),
            "--only",
            "host,bwrap,crun,exec",
            "--no-docker",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    floor = {}
    for line in out.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            floor[row["name"]] = row["p50_ms"]
            print(
                json.dumps(
                    {
                        "name": "anchor_" + row["name"],
                        "p50": row["p50_ms"],
                        "p95": row["p95_ms"],
                        "n": row["n"],
                        "unit": "ms",
                    }
                ),
                flush=True,
            )
    return floor


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--pool", type=int, default=100, help="COVE_POOL_SIZE of the server")
    parser.add_argument("--no-anchors", action="store_true")
    args = parser.parse_args()

    floor = {} if args.no_anchors else anchors(50)
    data_dir = Path("/var/tmp/cove-bench") / uuid.uuid4().hex[:8]
    data_dir.mkdir(parents=True)
    server = CoveServer(data_dir, COVE_POOL_SIZE=str(args.pool), COVE_MAX_SANDBOXES="100000")
    server.start()
    time.sleep(POOL_FILL_S)  # the warm pool fills in the background after start
    try:
        # A fresh connection per phase: the server closes idle keep-alive connections.
        seq = emit(
            "create_to_first_exec_sequential",
            sequential(SyncClient(server.url, HEADERS), args.n),
        )
        time.sleep(POOL_FILL_S)  # each phase starts with a full warm pool
        bst = emit(
            "create_to_first_exec_burst",
            asyncio.run(burst(server.url, args.burst)),
            concurrency=args.burst,
        )
        time.sleep(POOL_FILL_S)
        rt = emit("exec_round_trip", exec_round_trip(SyncClient(server.url, HEADERS), args.n * 2))
        if args.idle:
            idle_density(SyncClient(server.url, HEADERS), args.idle)
        for row, anchor in (
            (seq, "crun_run_echo_overlay"),
            (bst, "crun_run_echo_overlay"),
            (rt, "crun_exec_echo"),
            (rt, "host_fork_exec_echo"),
            (seq, "bwrap_unshare_all_echo"),
        ):
            if anchor in floor:
                print(
                    json.dumps(
                        {
                            "name": f"ratio_{row['name']}_vs_{anchor}",
                            "ratio_p50": round(row["p50"] / floor[anchor], 2),
                        }
                    ),
                    flush=True,
                )
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

"""Runtime micro-benchmarks (root, Linux): create from scratch, pool claim + first exec, exec round
trip, idle memory per sandbox. Usage: python bench/runtime_micro.py [--n 100] > result.json"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cove.config import Settings  # noqa: E402
from cove.runtime.base import Limits, SandboxConfig  # noqa: E402
from cove.runtime.namespaces import NamespaceRuntime  # noqa: E402


async def exec_echo(rt, h) -> tuple[int, bytes]:
    r, w = os.pipe()
    r2, w2 = os.pipe()
    nul = os.open("/dev/null", os.O_RDONLY)
    sp = await rt.spawn(h, ["echo", "hi"], {"PATH": "/usr/bin:/bin"}, "/", (nul, w, w2))
    os.close(w), os.close(w2), os.close(nul)
    asyncio.get_running_loop()
    out = b""
    for fd in (r, r2):  # read both pipes to EOF without blocking the loop
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                await asyncio.sleep(0)
                continue
            if not chunk:
                break
            out += chunk if fd == r else b""
        os.close(fd)
    return (await sp.exited).exit_code, out


def pct(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {
        "p50": round(statistics.median(xs), 3),
        "p95": round(xs[int(len(xs) * 0.95) - 1], 3),
        "n": len(xs),
    }


def ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


async def main(n: int, data_dir: Path, images_dir: Path) -> dict:
    s = Settings(data_dir=data_dir, images_dir=images_dir, database_url="", pool_size=0)
    rt = NamespaceRuntime(s)
    await rt.start()
    res: dict = {}
    try:
        # create from scratch + first exec, then destroy
        create, first, destroy = [], [], []
        for i in range(max(10, n // 5)):
            t = time.perf_counter()
            h = await rt.create(SandboxConfig(f"bench-{i}", "base", Limits(memory_mb=256)))
            create.append(ms(t))
            assert (await exec_echo(rt, h))[0] == 0
            first.append(ms(t))
            t = time.perf_counter()
            await rt.destroy(h)
            destroy.append(ms(t))
        res["create_from_scratch_ms"] = pct(create)
        res["create_from_scratch_plus_first_exec_ms"] = pct(first)
        res["destroy_ms"] = pct(destroy)

        # pool claim + first exec (pool kept at 2, refilled in background between rounds)
        rt.settings.__dict__["pool_size"] = 2  # frozen dataclass: bench-only override
        rt._refill("base")
        claim = []
        for i in range(max(10, n // 5)):
            while len(rt._pool.get("base", [])) < 1:
                await asyncio.sleep(0.005)
            t = time.perf_counter()
            h = await rt.create(
                SandboxConfig(f"c-{i}", "blaxel/py-app:latest", Limits(memory_mb=300))
            )
            assert (await exec_echo(rt, h))[0] == 0
            claim.append(ms(t))
            await rt.destroy(h)
        res["pool_claim_plus_first_exec_ms"] = pct(claim)
        rt.settings.__dict__["pool_size"] = 0

        # exec round trip in a live sandbox
        h = await rt.create(SandboxConfig("bench-exec", "base", Limits(memory_mb=256)))
        for _ in range(10):
            await exec_echo(rt, h)
        rt_ms = []
        for _ in range(n):
            t = time.perf_counter()
            code, out = await exec_echo(rt, h)
            rt_ms.append(ms(t))
            assert code == 0 and out == b"hi\n"
        res["exec_echo_roundtrip_ms"] = pct(rt_ms)
        await rt.destroy(h)

        # idle memory: 10 sandboxes after one exec each
        hs = [
            await rt.create(SandboxConfig(f"idle-{i}", "base", Limits(memory_mb=256)))
            for i in range(10)
        ]
        for h in hs:
            await exec_echo(rt, h)
        priv, pss, memcg = [], [], []
        for h in hs:
            roll = Path(f"/proc/{h.init_pid}/smaps_rollup").read_text().split("\n")
            kv = {ln.split(":")[0]: int(ln.split()[1]) for ln in roll[1:] if ln.strip()}
            priv.append(kv["Private_Clean"] + kv["Private_Dirty"])
            pss.append(kv["Pss"])
            memcg.append(rt.memory_usage(h) // 1024)
        res["idle_zygote_private_kib"] = statistics.median(priv)
        res["idle_zygote_pss_kib"] = statistics.median(pss)
        res["idle_memcg_usage_kib"] = statistics.median(memcg)
    finally:
        await rt.close(destroy_all=True)
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--data-dir", type=Path, default=Path("/var/lib/cove-bench"))
    ap.add_argument("--images-dir", type=Path, default=Path("/var/lib/cove/images"))
    a = ap.parse_args()
    print(json.dumps(asyncio.run(main(a.n, a.data_dir, a.images_dir)), indent=2))

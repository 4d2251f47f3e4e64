"""End-to-end tests of NamespaceRuntime (root, crun and cgroup v1, as scripts/install sets up).
The image is shared with a normal install via COVE_TEST_IMAGES_DIR (default /var/lib/cove/images)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from cove.config import Settings
from cove.runtime.base import Limits, RuntimeError_, SandboxConfig, UnknownImage
from cove.runtime.cgroups import parent_for
from cove.runtime.namespaces import NamespaceRuntime

DATA = Path(os.environ.get("COVE_TEST_DATA_DIR", "/var/lib/cove-rt-test"))
IMAGES = Path(os.environ.get("COVE_TEST_IMAGES_DIR", "/var/lib/cove/images"))
CG = parent_for(DATA)


@pytest.fixture
async def rt():
    runtime = NamespaceRuntime(
        Settings(data_dir=DATA, images_dir=IMAGES, database_url="", pool_size=1)
    )
    await runtime.start()
    yield runtime
    await runtime.close(destroy_all=True)
    assert_nothing_left(DATA)


def assert_nothing_left(data: Path, sid: str | None = None) -> None:
    mounts = Path("/proc/mounts").read_text()
    if sid:
        assert f"/{sid}/" not in mounts
        assert not Path(f"/sys/fs/cgroup/memory/{CG}/{sid}").exists()
        assert not Path(f"/sys/fs/cgroup/pids/{CG}/{sid}").exists()
        assert not (data / "crun" / sid).exists()
        assert not (data / "sandboxes" / sid).exists()
    else:
        assert str(data) not in mounts
        assert not list((data / "crun").iterdir())
        assert not list((data / "sandboxes").iterdir())


async def run(rt, h, argv, env=None) -> tuple[int, str]:
    r, w = os.pipe()
    nul = os.open("/dev/null", os.O_RDONLY)
    sp = await rt.spawn(h, argv, env or {"PATH": "/usr/bin:/bin"}, "/", (nul, w, w))
    os.close(w)
    os.close(nul)
    out = await asyncio.to_thread(_read_all, r)
    return (await asyncio.wait_for(sp.exited, 30)).exit_code, out


def _read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def cfg(sid: str, **limits) -> SandboxConfig:
    return SandboxConfig(
        sid, "blaxel/base-image:latest", Limits(**{"memory_mb": 256, **limits}), hostname="box"
    )  # non-pool hostname: always created from scratch


async def test_echo_and_exit_code(rt):
    h = await rt.create(cfg("t-echo"))
    assert await run(rt, h, ["echo", "hi"]) == (0, "hi\n")
    assert (await run(rt, h, ["sh", "-c", "exit 3"]))[0] == 3
    await rt.destroy(h)
    assert_nothing_left(DATA, "t-echo")


async def test_pool_claim(rt):
    for _ in range(200):
        if rt._pool.get("base"):
            break
        await asyncio.sleep(0.01)
    h = await rt.create(
        SandboxConfig("ignored", "blaxel/node:latest", Limits(memory_mb=128, pids=50))
    )
    assert h.sandbox_id.startswith("pool-")  # the caller must store handle.sandbox_id
    assert (await run(rt, h, ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]))[0] in (0, 1)
    assert Path(f"/sys/fs/cgroup/pids/{CG}/{h.sandbox_id}/pids.max").read_text().strip() == "50"
    assert await run(rt, h, ["node", "-e", "console.log(1+1)"]) == (0, "2\n")
    await rt.destroy(h)
    assert_nothing_left(DATA, h.sandbox_id)


async def test_oom_kill(rt):
    h = await rt.create(cfg("t-oom", memory_mb=32))
    code, _ = await run(rt, h, ["python3", "-c", "x=[]\nwhile True: x.append(bytearray(2**20))"])
    assert code == 137
    assert await run(rt, h, ["echo", "alive"]) == (0, "alive\n")
    await rt.destroy(h)


async def test_pids_limit(rt):
    h = await rt.create(cfg("t-pids", pids=30))
    code, out = await run(
        rt,
        h,
        [
            "python3",
            "-c",
            """
import os, time
n = 0
try:
    while n < 200:
        if os.fork() == 0:
            time.sleep(5); os._exit(0)
        n += 1
except OSError as e:
    print("stopped", n, e.errno)
""",
        ],
    )
    assert "stopped" in out and int(out.split()[1]) < 30
    await rt.destroy(h)
    assert_nothing_left(DATA, "t-pids")


async def test_isolation(rt):
    a = await rt.create(cfg("t-a"))
    b = await rt.create(cfg("t-b"))
    assert (await run(rt, a, ["ls", "/work"]))[0] != 0
    code, out = await run(rt, a, ["ps", "-e", "-o", "comm="])
    assert code == 0 and set(out.split()) == {"zygote", "ps"}
    assert (await run(rt, a, ["sh", "-c", "echo secret > /tmp/f"]))[0] == 0
    assert (await run(rt, b, ["cat", "/tmp/f"]))[0] != 0
    code, out = await run(rt, a, ["grep", "-E", "NoNewPrivs|Seccomp:|CapEff", "/proc/self/status"])
    assert "NoNewPrivs:\t1" in out and "Seccomp:\t2" in out and "0000000020000420" in out
    code, _ = await run(rt, a, ["python3", "-c", "import os; os.unshare(os.CLONE_NEWUSER)"])
    assert code != 0
    for h in (a, b):
        await rt.destroy(h)
    assert_nothing_left(DATA, "t-a")


async def test_signal(rt):
    h = await rt.create(cfg("t-sig"))
    r, w = os.pipe()
    sp = await rt.spawn(h, ["sleep", "30"], {"PATH": "/bin"}, "/", (r, w, w))
    os.close(r), os.close(w)
    await rt.signal(h, sp.pid, 15)
    ex = await asyncio.wait_for(sp.exited, 5)
    assert ex.signal == 15 and ex.exit_code == 143
    await rt.destroy(h)


async def test_reattach_and_orphans(rt):
    h = await rt.create(cfg("t-re"))
    rt._clients.pop("t-re").close()  # as after a server restart
    h2 = await rt.reattach("t-re")
    assert h2 is not None and h2.init_pid == h.init_pid
    assert await run(rt, h2, ["echo", "back"]) == (0, "back\n")
    rt._live.discard("t-re")  # pretend another server instance created it
    await rt.cleanup_orphans(keep=set())
    assert_nothing_left(DATA, "t-re")
    assert await rt.reattach("t-re") is None


async def test_failure_paths_leave_nothing(rt):
    with pytest.raises(UnknownImage):
        await rt.create(SandboxConfig("t-bad", "ubuntu:22.04", Limits(memory_mb=64)))
    assert_nothing_left(DATA, "t-bad")
    orig = rt.bin_dir
    rt.bin_dir = DATA / "no-such-bin"  # crun fails to bind-mount the zygote
    with pytest.raises(RuntimeError_):
        await rt.create(cfg("t-fail"))
    rt.bin_dir = orig
    assert_nothing_left(DATA, "t-fail")

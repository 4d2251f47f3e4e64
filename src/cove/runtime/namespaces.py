"""NamespaceRuntime: crun sandboxes (pid/ipc/uts/mnt/net namespaces, cgroup v1 limits, seccomp,
3 capabilities, no_new_privs) on a shared EROFS image with a tmpfs+overlay root per sandbox and
the C zygote as PID 1. A warm pool per image turns create into a claim.

Pooled sandboxes keep their own id ("pool-<hex>"): the SandboxHandle returned by create() may have
a sandbox_id different from config.sandbox_id. Callers must store handle.sandbox_id as the runtime
id and pass it to reattach/destroy (cgroups, crun state and run_dir/<id> are all keyed by it).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import socket
from pathlib import Path

from cove.config import Settings
from cove.runtime import cgroups, crun, images, mounts, netns, oci
from cove.runtime.background import in_background, restore_priority
from cove.runtime.base import (
    Limits,
    PortInfo,
    RuntimeError_,
    SandboxConfig,
    SandboxGone,
    SandboxHandle,
    SpawnedProcess,
)
from cove.runtime.zygote import ZygoteClient, build_zygote

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
POOL_HOSTNAME = "sandbox"
REFILL_QUIET_S = 0.1
POOL_MEMORY_MB = 1024  # placeholder until claimed; claim rewrites every limit


class NamespaceRuntime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run_dir = settings.run_dir
        self.crun_root = settings.run_dir.parent / "crun"
        self.bin_dir = settings.data_dir / "bin"
        self._clients: dict[str, ZygoteClient] = {}
        self._live: set[str] = set()  # every sandbox this instance created (pool or claimed)
        self._pool: dict[str, list[SandboxHandle]] = {}
        self._pool_tasks: dict[str, asyncio.Task] = {}
        self._refill_timers: dict[str, asyncio.TimerHandle] = {}
        self._cg = cgroups.parent_for(settings.data_dir)
        self._memsw = (cgroups.ROOT / "memory" / "memory.memsw.limit_in_bytes").exists()
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._check_host()
        cgroups.ensure_hugetlb_v1()
        for d in (self.run_dir, self.crun_root):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)  # control sockets live here: host-only
        src = Path(__file__).with_name("zygote.c")
        await asyncio.to_thread(build_zygote, src, self.bin_dir / "zygote")
        img = await asyncio.to_thread(images.ensure_image, self.settings, images.BASE)
        mounts.mount_image(img, images.mount_dir(self.settings, images.BASE))
        self._started = True
        if self.settings.pool_size > 0:
            self._refill(images.BASE)

    def _check_host(self) -> None:
        missing = []
        if os.geteuid() != 0:
            missing.append("root privileges (run as root)")
        fs = Path("/proc/filesystems").read_text().split()
        missing += [
            f"kernel support for {f} (modprobe {f})" for f in ("overlay", "erofs") if f not in fs
        ]
        if crun.binary() is None:
            missing.append("crun on PATH (apt-get install crun)")
        missing += [
            f"the cgroup v1 '{c}' hierarchy at /sys/fs/cgroup/{c}"
            for c in cgroups.missing_controllers()
        ]
        if not (self.bin_dir / "zygote").exists() and shutil.which("gcc") is None:
            missing.append("gcc to build the sandbox init (apt-get install gcc)")
        if missing:
            raise RuntimeError_("cove needs: " + "; ".join(missing))

    async def close(self, destroy_all: bool) -> None:
        for timer in self._refill_timers.values():
            timer.cancel()
        self._refill_timers.clear()
        for task in self._pool_tasks.values():
            task.cancel()
        for task in self._pool_tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._pool_tasks.clear()
        pooled = [h.sandbox_id for hs in self._pool.values() for h in hs]
        self._pool.clear()
        doomed = set(pooled)
        if destroy_all:
            doomed |= self._live | self._on_disk_ids()
        for sid in list(self._clients):
            self._clients.pop(sid).close()
        for sid in doomed:
            await asyncio.to_thread(self._teardown, sid)
            self._live.discard(sid)
        if destroy_all:
            mounts.umount(images.mount_dir(self.settings, images.BASE))
            cgroups.remove_parent(self._cg)

    def resolve_image(self, image: str) -> str:
        return images.resolve_image(image)

    # -- create ---------------------------------------------------------------------------------

    async def create(self, config: SandboxConfig) -> SandboxHandle:
        local = self.resolve_image(config.image)
        if not self._started:
            raise RuntimeError_("runtime not started")
        pool = self._pool.get(local)
        if pool and config.hostname == POOL_HOSTNAME:
            handle = pool.pop()
            self._refill(local)
            try:
                self._claim(handle, config.limits)
            except OSError as exc:
                await self.destroy(handle)
                raise RuntimeError_(f"could not apply limits to a pooled sandbox: {exc}") from None
            handle.image = config.image  # meta.json keeps the local name: enough to reattach
            return handle
        return await self._create_fresh(
            config.sandbox_id, local, config.image, config.limits, config.hostname
        )

    def _claim(self, handle: SandboxHandle, limits: Limits) -> None:
        restore_priority(handle.init_pid)  # pooled inits start at background priority
        cgroups.apply_limits(self._cg, handle.sandbox_id, limits, POOL_MEMORY_MB)
        if limits.disk_mb != self.settings.default_disk_mb:
            mounts.mount(
                "tmpfs",
                self.run_dir / handle.sandbox_id / "upper",
                "tmpfs",
                mounts.MS_REMOUNT | mounts.MS_NODEV,
                f"size={int(limits.disk_mb)}m",
            )

    async def _create_fresh(
        self,
        sid: str,
        local: str,
        image: str,
        limits: Limits,
        hostname: str,
        background: bool = False,
    ) -> SandboxHandle:
        if not _ID.match(sid):
            raise RuntimeError_(f"invalid sandbox id {sid!r}")
        bundle = self.run_dir / sid
        try:
            bundle.mkdir(mode=0o700)
        except FileExistsError:
            raise RuntimeError_(f"sandbox {sid!r} already exists") from None
        self._live.add(sid)
        with contextlib.ExitStack() as undo:
            # One idempotent teardown undoes every step (crun container, cgroups, mounts, dir);
            # pushed first so that a failure at any later step leaves nothing behind.
            undo.callback(self._live.discard, sid)
            undo.callback(self._teardown, sid)
            rootfs = mounts.mount_rootfs(
                bundle, images.mount_dir(self.settings, local), limits.disk_mb
            )
            cfg = oci.build_config(
                sid, rootfs, self.bin_dir, limits, hostname, self._memsw, self._cg
            )
            oci.write_config(bundle, cfg)
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as listener:
                listener.bind(str(bundle / "ctl.sock"))
                listener.listen(8)
                # crun brings `lo` up in the fresh net ns itself (checked: flags 0x9), so the
                # sandbox has working loopback and nothing else; no host-side setns needed.
                run = in_background if background else asyncio.to_thread
                init_pid = await run(
                    crun.run_detached, self.crun_root, bundle, sid, listener.fileno()
                )
            handle = SandboxHandle(sid, image, rootfs, init_pid)
            self._clients[sid] = await ZygoteClient.connect(bundle / "ctl.sock")
            self._write_meta(handle)
            undo.pop_all()
        return handle

    def _write_meta(self, handle: SandboxHandle) -> None:
        (self.run_dir / handle.sandbox_id / "meta.json").write_text(
            json.dumps({"image": handle.image, "init_pid": handle.init_pid})
        )

    # -- warm pool ------------------------------------------------------------------------------

    def _refill(self, local: str) -> None:
        """Refill once claims pause for REFILL_QUIET_S (at once when the pool ran dry): a
        refill's crun run and cgroup set-up slow down the claims of a burst it overlaps."""
        timer = self._refill_timers.pop(local, None)
        if timer is not None:
            timer.cancel()
        if self._pool.get(local):
            loop = asyncio.get_running_loop()
            self._refill_timers[local] = loop.call_later(REFILL_QUIET_S, self._fill_now, local)
        else:
            self._fill_now(local)

    def _fill_now(self, local: str) -> None:
        self._refill_timers.pop(local, None)
        task = self._pool_tasks.get(local)
        if task is None or task.done():
            self._pool_tasks[local] = asyncio.get_running_loop().create_task(self._fill(local))

    async def _fill(self, local: str) -> None:
        pool = self._pool.setdefault(local, [])
        limits = Limits(
            memory_mb=POOL_MEMORY_MB,
            pids=self.settings.default_pids,
            disk_mb=self.settings.default_disk_mb,
        )
        failures = 0
        while len(pool) < self.settings.pool_size and failures < 3:
            sid = f"pool-{secrets.token_hex(6)}"
            try:
                pool.append(
                    await self._create_fresh(
                        sid, local, local, limits, POOL_HOSTNAME, background=True
                    )
                )
            except RuntimeError_:
                failures += 1  # logged by the caller's create path; don't spin
                await asyncio.sleep(0.5 * failures)

    # -- reattach / cleanup ---------------------------------------------------------------------

    async def reattach(self, sandbox_id: str) -> SandboxHandle | None:
        if not _ID.match(sandbox_id):
            return None
        bundle = self.run_dir / sandbox_id
        st = await asyncio.to_thread(crun.state, self.crun_root, sandbox_id)
        if st and st.get("status") == "running" and bundle.is_dir():
            try:
                client = await ZygoteClient.connect(bundle / "ctl.sock", timeout=1.0)
            except (TimeoutError, OSError):
                client = None
            if client is not None:
                old = self._clients.pop(sandbox_id, None)
                if old:
                    old.close()
                self._clients[sandbox_id] = client
                self._live.add(sandbox_id)
                try:
                    image = json.loads((bundle / "meta.json").read_text())["image"]
                except (OSError, ValueError, KeyError):
                    image = images.BASE
                return SandboxHandle(sandbox_id, image, bundle / "rootfs", int(st["pid"]))
        await asyncio.to_thread(self._teardown, sandbox_id)
        return None

    def _on_disk_ids(self) -> set[str]:
        ids = crun.list_ids(self.crun_root) | cgroups.list_ids(self._cg)
        with contextlib.suppress(FileNotFoundError):
            ids |= {e.name for e in os.scandir(self.run_dir) if e.is_dir()}
        return ids

    async def cleanup_orphans(self, keep: set[str]) -> None:
        for sid in self._on_disk_ids() - keep - self._live:
            await asyncio.to_thread(self._teardown, sid)

    # -- processes ------------------------------------------------------------------------------

    async def _client(self, handle: SandboxHandle) -> ZygoteClient:
        client = self._clients.get(handle.sandbox_id)
        if client is None or client.closed:
            try:
                client = await ZygoteClient.connect(self.run_dir / handle.sandbox_id / "ctl.sock")
            except (TimeoutError, OSError) as exc:
                raise SandboxGone(f"sandbox {handle.sandbox_id} is not running") from exc
            self._clients[handle.sandbox_id] = client
        return client

    async def spawn(
        self,
        handle: SandboxHandle,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        stdio: tuple[int, int, int],
        tty: bool = False,
    ) -> SpawnedProcess:
        client = await self._client(handle)
        try:
            return await client.spawn(argv, env, cwd, stdio, tty)
        except TimeoutError:
            raise RuntimeError_("this sandbox's init predates terminal support") from None

    def open_pty(self, handle: SandboxHandle) -> tuple[int, int]:
        return netns.open_pty(handle.init_pid)

    async def connect(
        self, handle: SandboxHandle, port: int, timeout: float = 5.0
    ) -> socket.socket:
        sock = await asyncio.to_thread(netns.socket_in_netns, handle.init_pid)
        sock.setblocking(False)
        try:
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), timeout)
        except BaseException:
            sock.close()
            raise
        return sock

    async def listening_ports(self, handle: SandboxHandle, pid: int | None) -> list[PortInfo]:
        if pid is None:
            return await asyncio.to_thread(netns.listening, handle.init_pid)
        host_pids = cgroups.procs(self._cg, handle.sandbox_id)
        return await asyncio.to_thread(netns.session_ports, handle.init_pid, host_pids, pid)

    async def signal(self, handle: SandboxHandle, pid: int, signo: int) -> None:
        client = await self._client(handle)
        err = await client.signal(pid, signo)
        if err not in (0, errno.ESRCH):
            raise OSError(err, f"signal {signo} to {pid}: {os.strerror(err)}")

    # -- teardown -------------------------------------------------------------------------------

    async def destroy(self, handle: SandboxHandle) -> None:
        client = self._clients.pop(handle.sandbox_id, None)
        if client is not None:
            client.close()
        await in_background(self._teardown, handle.sandbox_id)
        self._live.discard(handle.sandbox_id)

    def _teardown(self, sid: str) -> None:
        """Idempotent: kill, forget the container, free cgroups, unmount, remove the state dir."""
        if not _ID.match(sid):
            return
        # SIGKILL every task ourselves and wait for the cgroup to empty: `crun delete -f` on a
        # live container polls slowly (~17 ms); on a dead one it is quick. This also covers a
        # lost crun state with processes still around.
        cgroups.kill_all(self._cg, sid)
        crun.delete(self.crun_root, sid)
        left = cgroups.remove(self._cg, sid)
        bundle = self.run_dir / sid
        mounts.unmount_rootfs(bundle)
        if not mounts.is_mounted(bundle / "upper") and not mounts.is_mounted(bundle / "rootfs"):
            shutil.rmtree(bundle, ignore_errors=True)
        if left:
            raise RuntimeError_(f"sandbox {sid}: could not remove cgroups {left}")

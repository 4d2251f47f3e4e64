"""Sandbox use cases shared by every surface: create, get, list, update, delete, expire.

Live sandboxes are held in memory (record + runtime handle + process manager); the database
keeps every record so a restart can reattach or mark them, and so deleted names answer 410.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from cove.domain.durations import utcnow
from cove.domain.errors import (
    Conflict,
    CoveError,
    Gone,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    NotReady,
    Unavailable,
)
from cove.domain.network import NetworkPolicy, keep_secrets, parse_network
from cove.domain.sandbox import Sandbox, SandboxSpec, Status, generate_name, new_sandbox_id
from cove.egress.base import Counters, Egress, EgressError, EgressReport
from cove.egress.noop import NoEgress
from cove.runtime.base import (
    Limits,
    Runtime,
    RuntimeError_,
    SandboxConfig,
    SandboxHandle,
    UnknownImage,
)
from cove.services.files import SandboxFiles
from cove.services.processes import ProcessManager
from cove.store.sandboxes import SandboxRepo

log = logging.getLogger("cove.sandboxes")
RESOLV_CONF = b"nameserver 127.0.0.1\noptions attempts:1 timeout:2\n"  # egress/dns.py


@dataclass
class CreateSandbox:
    """One create request for every surface; defaults are written once, here."""

    spec: SandboxSpec
    name: str | None = None
    external_id: str | None = None
    if_not_exists: bool = False
    source: str = "sandbox"


@dataclass
class LiveSandbox:
    record: Sandbox
    handle: SandboxHandle | None = None
    processes: ProcessManager | None = None
    files: SandboxFiles | None = None

    def require_running(self) -> LiveSandbox:
        if self.record.status == Status.PROVISIONING:
            raise NotReady(f"sandbox {self.record.name!r} is still provisioning")
        if self.record.status != Status.RUNNING or self.processes is None:
            raise NotReady(f"sandbox {self.record.name!r} is {self.record.status.value}")
        return self


class SandboxService:
    def __init__(
        self,
        repo: SandboxRepo,
        runtime: Runtime,
        max_per_workspace: int,
        disk_mb: int,
        pids: int,
        egress: Egress | None = None,
    ) -> None:
        self._repo = repo
        self._runtime = runtime
        self._egress: Egress = egress or NoEgress()
        self._max = max_per_workspace
        self._disk_mb = disk_mb
        self._pids = pids
        self._live: dict[tuple[str, str], LiveSandbox] = {}
        self._by_id: dict[str, LiveSandbox] = {}
        self._count: dict[str, int] = {}  # live sandboxes per workspace (the limit check)
        self._background: set[asyncio.Task[None]] = set()
        self.on_deleted: list[Callable[[Sandbox], Awaitable[None]]] = []  # e.g. its previews

    # -- create -------------------------------------------------------------------------

    async def create(self, workspace: str, req: CreateSandbox) -> LiveSandbox:
        try:
            self._runtime.resolve_image(req.spec.image)
        except UnknownImage as exc:
            raise InvalidRequest(exc.reason) from None
        name = req.name or self._free_name(workspace)
        existing = self._live.get((workspace, name))
        if existing is not None:
            if req.if_not_exists:
                return existing
            raise Conflict(f"sandbox {name!r} already exists")
        if self._count.get(workspace, 0) >= self._max:
            raise LimitExceeded(f"workspace {workspace!r} has reached its limit of {self._max}")
        record = Sandbox(new_sandbox_id(), workspace, name, req.spec, source=req.source)
        record.external_id = req.external_id
        record.set_ttl_from_spec()
        live = LiveSandbox(record)
        self._register(live)
        try:
            await self._start(live)
            await self._repo.insert(record)
        except BaseException as exc:
            await self._abort_create(live, exc)
            raise
        return live

    def _free_name(self, workspace: str) -> str:
        while (workspace, name := generate_name()) in self._live:
            pass
        return name

    async def _start(self, live: LiveSandbox) -> None:
        record = live.record
        config = SandboxConfig(
            sandbox_id=record.id,
            image=record.spec.image,
            limits=Limits(memory_mb=record.spec.memory_mb, pids=self._pids, disk_mb=self._disk_mb),
        )
        try:
            live.handle = await self._runtime.create(config)
        except RuntimeError_ as exc:
            raise Unavailable(f"sandbox could not be started: {exc.reason}") from None
        await self._connect_egress(live.handle, record)
        self._attach(live, live.handle)
        record.record("deployment", "sandbox started", "DEPLOYED")

    async def _connect_egress(self, handle: SandboxHandle, record: Sandbox) -> None:
        """The sandbox's only way out (proxy + DNS in its netns), before any process runs."""
        steps = [self._egress.attach(record.id, handle.init_pid, self._policy(record.spec))]
        if self._egress.env():
            steps.append(SandboxFiles(handle.root).write("/etc/resolv.conf", RESOLV_CONF))
        try:
            await asyncio.gather(*steps)
        except EgressError as exc:
            raise Unavailable(f"sandbox network could not be set up: {exc.reason}") from None
        except CoveError as exc:
            raise Unavailable(f"sandbox network could not be set up: {exc.message}") from None

    @staticmethod
    def _policy(spec: SandboxSpec) -> NetworkPolicy:
        return parse_network(spec.extra.get("network"))

    def _env(self, spec: SandboxSpec) -> dict[str, str]:
        return {**self._egress.env(), **spec.envs}

    def _attach(self, live: LiveSandbox, handle: SandboxHandle) -> None:
        live.handle = handle
        live.record.runtime_id = handle.sandbox_id
        live.processes = ProcessManager(
            self._runtime, handle, self._env(live.record.spec), on_activity=live.record.touch
        )
        live.files = SandboxFiles(handle.root)
        live.record.status = Status.RUNNING

    async def _abort_create(self, live: LiveSandbox, exc: BaseException) -> None:
        """Undo a failed create: nothing of it may stay (runtime remains, name, record)."""
        self._unregister(live)
        if live.processes:
            live.processes.close()
        with contextlib.suppress(Exception):
            await asyncio.shield(self._egress.detach(live.record.id))
        if live.handle is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._runtime.destroy(live.handle))
        if isinstance(exc, asyncio.CancelledError):  # its INSERT may be queued: follow it
            live.record.status, live.record.deleted_at = Status.DELETED, utcnow()
            with contextlib.suppress(Exception):
                await asyncio.shield(self.save(live.record))
        log.warning("create of %s failed: %r", live.record.name, exc)

    # -- read -----------------------------------------------------------------------------

    def get(self, workspace: str, name: str) -> LiveSandbox:
        live = self._live.get((workspace, name))
        if live is None:
            raise NotFound(f"sandbox {name!r} not found")
        return live

    def get_by_id(self, workspace: str, sandbox_id: str) -> LiveSandbox:
        live = self._by_id.get(sandbox_id)
        if live is None or live.record.workspace != workspace:
            raise NotFound(f"sandbox {sandbox_id!r} not found")
        return live

    async def get_or_gone(self, workspace: str, name: str) -> LiveSandbox:
        """Like get, but a deleted sandbox raises Gone (the v1 surface answers 410)."""
        try:
            return self.get(workspace, name)
        except NotFound:
            if await self._repo.latest_deleted(workspace, name) is not None:
                raise Gone(f"sandbox {name!r} has been deleted") from None
            raise

    def list(self, workspace: str) -> list[Sandbox]:
        found = [live.record for (ws, _), live in self._live.items() if ws == workspace]
        return sorted(found, key=lambda s: (s.created_at, s.name))

    async def list_deleted(self, workspace: str) -> list[Sandbox]:
        return await self._repo.deleted(workspace)

    def find_by_external_id(self, workspace: str, external_id: str) -> LiveSandbox:
        for (ws, _), live in self._live.items():
            if ws == workspace and live.record.external_id == external_id:
                return live
        raise NotFound(f"no sandbox with externalId {external_id!r}")

    # -- update ---------------------------------------------------------------------------

    async def replace_spec(self, workspace: str, name: str, spec: SandboxSpec) -> LiveSandbox:
        """v0 PUT: the whole spec is replaced; image and memory of a live sandbox stay."""
        live = self.get(workspace, name)
        record = live.record
        if spec.image != record.spec.image:
            raise InvalidRequest("spec.runtime.image cannot change on an existing sandbox")
        if spec.memory_mb != record.spec.memory_mb:
            raise InvalidRequest("spec.runtime.memory cannot change on an existing sandbox")
        network = keep_secrets(record.spec.extra.get("network"), spec.extra.get("network"))
        if network is not None:  # GET never shows secrets: a PUT keeps them (keep_secrets)
            spec.extra["network"] = network
        policy = self._policy(spec)
        record.spec = spec
        record.set_ttl_from_spec()
        self._egress.update(record.id, policy)  # new connections and requests from now on
        if live.processes is not None:
            live.processes.set_env(self._env(spec))
        await self.save(record)
        return live

    async def extend(self, workspace: str, name: str, seconds: int) -> LiveSandbox:
        """v1 PATCH: add time to the sandbox's expiry."""
        live = await self.get_or_gone(workspace, name)
        record = live.record
        base = max(record.expires_at or utcnow(), utcnow())
        record.expires_at = base + timedelta(seconds=seconds)
        await self.save(record)
        return live

    async def save(self, record: Sandbox) -> None:
        """Persist a record (also after another service changed it: deploy events)."""
        record.updated_at = utcnow()
        await self._repo.save(record)

    def all_live(self) -> list[LiveSandbox]:
        """Every live sandbox of every workspace (services restoring their own state)."""
        return list(self._by_id.values())

    # -- delete ---------------------------------------------------------------------------

    async def delete(self, workspace: str, name: str, reason: str = "deleted") -> LiveSandbox:
        """Marks DELETING and tears down in the background; the name frees when done."""
        live = self.get(workspace, name)
        if live.record.status == Status.DELETING:
            return live
        live.record.status = Status.DELETING
        live.record.reason = reason
        live.record.record("deployment", f"sandbox {reason}", "DELETING")
        task = asyncio.ensure_future(self._teardown(live))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return live

    async def _teardown(self, live: LiveSandbox) -> None:
        record = live.record
        if live.processes:
            live.processes.close()
        await self._egress.detach(record.id)
        if live.handle is not None:
            try:
                await self._runtime.destroy(live.handle)
            except Exception:
                log.exception("destroy of %s failed", record.name)
        record.status = Status.DELETED
        record.deleted_at = utcnow()
        record.record("deployment", "sandbox deleted", "TERMINATED")
        self._unregister(live)
        await self.save(record)
        for hook in self.on_deleted:
            try:
                await hook(record)
            except Exception:
                log.exception("after-delete hook for %s failed", record.name)

    # -- lifecycle of the service ---------------------------------------------------------

    async def restore(self) -> None:
        """After a restart: reattach running sandboxes, mark the rest, remove orphans."""
        kept: set[str] = set()
        for record in await self._repo.live():
            live = LiveSandbox(record)
            self._register(live)
            if record.status == Status.RUNNING and record.runtime_id:
                handle = await self._runtime.reattach(record.runtime_id)
                if handle is not None:
                    try:
                        await self._connect_egress(handle, record)
                    except Unavailable as exc:  # e.g. sandbox code took the port meanwhile
                        log.warning("%s: %s", record.name, exc.message)
                    self._attach(live, handle)
                    kept.add(handle.sandbox_id)
                    continue
                self._mark(record, Status.STOPPED, "the sandbox was lost while cove was down")
            elif record.status in (Status.PROVISIONING, Status.DELETING):
                self._mark(record, Status.FAILED, "cove stopped during this operation")
            await self.save(record)
        await self._runtime.cleanup_orphans(kept)

    async def shutdown(self) -> None:
        """SIGTERM: stop every sandbox (records say why); no process or mount may remain."""
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._egress.close()
        for live in list(self._live.values()):
            if live.processes:
                live.processes.close()
            if live.record.status == Status.RUNNING:
                self._mark(live.record, Status.STOPPED, "cove was stopped")
                await self.save(live.record)

    def _mark(self, record: Sandbox, status: Status, reason: str) -> None:
        record.status = status
        record.reason = reason
        record.record("deployment", reason, status.name)

    def egress_report(self, workspace: str, name: str, limit: int) -> EgressReport:
        live = self.get(workspace, name)
        return self._egress.report(live.record.id, limit) or EgressReport()

    def egress_counters(self, sandbox_id: str) -> Counters | None:
        """Egress requests and bytes out/in of a sandbox (metering); also shortly after its
        delete. None when egress is off or the sandbox unknown."""
        return self._egress.counters(sandbox_id)

    async def expire_due(self) -> None:
        now = utcnow()
        for live in list(self._live.values()):
            deadline = live.record.deadline()
            if deadline is not None and deadline <= now and live.record.status != Status.DELETING:
                with contextlib.suppress(NotFound):
                    await self.delete(live.record.workspace, live.record.name, "expired")

    def _register(self, live: LiveSandbox) -> None:
        workspace = live.record.workspace
        self._live[(workspace, live.record.name)] = live
        self._by_id[live.record.id] = live
        self._count[workspace] = self._count.get(workspace, 0) + 1

    def _unregister(self, live: LiveSandbox) -> None:
        key = (live.record.workspace, live.record.name)
        if self._live.get(key) is live:
            del self._live[key]
            self._count[key[0]] -= 1
        self._by_id.pop(live.record.id, None)

"""Deploy a project into a running sandbox: files → build steps → a supervised app → its URL.

One deploy at a time per sandbox: a second one is a 409 until the first has ended (running or
failed). A deploy replaces WORKDIR and the previous app. The app runs as the process "app"
(keepAlive, restarted on failure up to MAX_RESTARTS times) and is reached through a public
preview named "app-<port>" on the sandbox's first declared port (default 3000); its URL is the
sandbox's `url` once the port listens. The newest deploy of each sandbox is kept in memory and
as "deploy" events in the sandbox's record, so a restarted server still knows it; a deploy cut
short by the restart is failed then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from collections.abc import Callable, Coroutine
from typing import Any

from cove.domain.deploy import (
    DEFAULT_PORT,
    Deployment,
    DeployStatus,
    NotDeployable,
    Plan,
    Source,
    from_events,
    plan,
)
from cove.domain.errors import CoveError, NotFound, NotReady
from cove.domain.preview import Preview, PreviewSpec
from cove.domain.pricing import NOMINAL_MICROS
from cove.domain.programs import WORKDIR
from cove.domain.sandbox import Sandbox, Status
from cove.services.billing import Billing
from cove.services.previews import PreviewService
from cove.services.processes import ExecRequest, Process, ProcessManager
from cove.services.processes.manager import DEFAULT_PATH, STOP_GRACE_S
from cove.services.sandboxes import LiveSandbox, SandboxService

log = logging.getLogger("cove.deploys")
APP = "app"  # the app's process name
BUILD = "deploy-build"  # each build step's process name
BUILD_TIMEOUT_S = 900  # per build step (npm install, pip install, go build)
START_TIMEOUT_S = 120  # from start until the app listens on its port
MAX_RESTARTS = 5
LOG_TAIL = 2000  # characters of output quoted in a failure's error
_WRITERS = 16  # files written at once
# An app that outlived a crash of cove runs unsupervised: a redeploy finds it by its listening
# socket and ends its process group (run inside the sandbox, so only its processes are seen).
_FREE_PORT = """import os, signal, sys
want = "socket:[%s]" % sys.argv[1]
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
        if any(os.readlink(f"/proc/{pid}/fd/{fd}") == want for fd in fds):
            group = os.getpgid(int(pid))
            if group > 1:  # never init (pid 1)
                os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
"""


class DeployFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DeployService:
    def __init__(
        self,
        sandboxes: SandboxService,
        previews: PreviewService,
        billing: Billing,
        preview_url: Callable[[Preview], str],
    ) -> None:
        self._sandboxes = sandboxes
        self._previews = previews
        self._billing = billing
        self._preview_url = preview_url
        self._deploys: dict[str, Deployment] = {}  # by sandbox id
        self._apps: dict[str, Process] = {}  # the app process of each sandbox
        self._tasks: dict[str, set[asyncio.Task[None]]] = {}  # builds and watchers, per sandbox
        self._orphans: set[str] = set()  # sandboxes whose app survived a restart of cove

    def current(self, sandbox_id: str) -> Deployment | None:
        return self._deploys.get(sandbox_id)

    # -- deploy ---------------------------------------------------------------------------------

    async def deploy(self, workspace: str, name: str, source: Source) -> LiveSandbox:
        """Charge, claim the sandbox and start building in the background (the 202)."""
        live = await self._sandboxes.get_or_gone(workspace, name)
        record = live.record
        self._check_deployable(live)
        port = record.spec.ports[0].target if record.spec.ports else DEFAULT_PORT
        how = plan(source, port)
        previous = self._deploys.get(record.id)
        dep = self._deploys[record.id] = Deployment(how.runtime, port)  # claimed: others 409
        try:
            await self._billing.charge(workspace, NOMINAL_MICROS, "nominal", f"deploy {name}")
        except BaseException:
            self._restore(record.id, dep, previous)
            raise
        self._spawn(record.id, self._run(live, dep, how))
        return live

    def _check_deployable(self, live: LiveSandbox) -> None:
        record = live.record
        if record.status == Status.PROVISIONING:
            raise NotReady(f"sandbox {record.name!r} is still provisioning")
        if record.status != Status.RUNNING or live.processes is None:
            raise NotDeployable(f"sandbox {record.name!r} is {record.status.value}: not deployable")
        dep = self._deploys.get(record.id)
        if dep is not None and dep.status == DeployStatus.BUILDING:
            raise NotDeployable(
                f"a deploy to sandbox {record.name!r} is in progress (started "
                f"{dep.started_at.isoformat()}); wait until it is running or failed"
            )

    def _restore(self, sandbox_id: str, dep: Deployment, previous: Deployment | None) -> None:
        if self._deploys.get(sandbox_id) is dep:
            if previous is None:
                del self._deploys[sandbox_id]
            else:
                self._deploys[sandbox_id] = previous

    async def _run(self, live: LiveSandbox, dep: Deployment, how: Plan) -> None:
        await self._persist(live.record, dep)
        try:
            url = await self._build_and_start(live, dep, how)
        except DeployFailed as exc:
            dep.fail(exc.message)
        except CoveError as exc:  # e.g. a full disk, the sandbox went away
            dep.fail(exc.message)
        except Exception as exc:
            log.exception("deploy to %s failed", live.record.name)
            dep.fail(f"internal error: {exc}")
        else:
            dep.running(url)
        await self._persist(live.record, dep)

    async def _build_and_start(self, live: LiveSandbox, dep: Deployment, how: Plan) -> str:
        processes = live.require_running().processes
        assert processes is not None and live.files is not None
        await self._stop_app(live.record.id, processes)
        await self._free_port(live.record.id, processes, dep.port)
        await self._write(live, how)
        env = {**how.env, "PATH": ":".join((*how.path, DEFAULT_PATH))}
        for step in how.setup:
            await self._build_step(processes, step, env)
        app = await processes.exec(
            ExecRequest(
                command=how.command,
                name=APP,
                working_dir=WORKDIR,
                env=env,
                timeout=0,  # no limit: the app lives as long as the sandbox
                keep_alive=True,
                restart_on_failure=True,
                max_restarts=MAX_RESTARTS,
            )
        )
        self._apps[live.record.id] = app
        await self._wait_listening(processes, app, dep.port)
        self._spawn(live.record.id, self._watch(live.record, dep, app))
        return self._preview_url(await self._app_preview(live.record, dep.port))

    async def _stop_app(self, sandbox_id: str, processes: ProcessManager) -> None:
        """The previous app (and its children: signals go to its process group) ends first."""
        app = self._apps.pop(sandbox_id, None)
        if app is None or app.done.is_set():
            return
        with contextlib.suppress(CoveError):
            await processes.stop(app)
        await processes.wait(app, STOP_GRACE_S * 2)

    async def _free_port(self, sandbox_id: str, processes: ProcessManager, port: int) -> None:
        held = await _listeners(processes, port)
        if held and sandbox_id in self._orphans:
            for inode in held:
                req = ExecRequest(f"python3 -c {shlex.quote(_FREE_PORT)} {inode}", timeout=30)
                await processes.wait(await processes.exec(req), 30)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STOP_GRACE_S  # the killed group is still exiting
            while (held := await _listeners(processes, port)) and loop.time() < deadline:
                await asyncio.sleep(0.05)
        self._orphans.discard(sandbox_id)
        if held:
            raise DeployFailed(
                f"port {port} is already in use by a process the deploy did not start; "
                "stop it (process API) and deploy again"
            )

    async def _write(self, live: LiveSandbox, how: Plan) -> None:
        """WORKDIR becomes exactly the project (a redeploy leaves nothing of the last one)."""
        files = live.files
        assert files is not None
        with contextlib.suppress(NotFound):
            await files.delete(WORKDIR, recursive=True)
        await files.mkdir(WORKDIR)
        gate = asyncio.Semaphore(_WRITERS)

        async def one(path: str, data: bytes) -> None:
            async with gate:
                mode = 0o755 if path in how.executables else 0o644
                await files.write(f"{WORKDIR}/{path}", data, mode)

        await asyncio.gather(*(one(p, d) for p, d in how.files.items()))

    async def _build_step(self, processes: ProcessManager, step: str, env: dict[str, str]) -> None:
        req = ExecRequest(
            command=step, name=BUILD, working_dir=WORKDIR, env=env, timeout=BUILD_TIMEOUT_S
        )
        proc = await processes.exec(req)
        await proc.done.wait()  # the manager kills it at its timeout, so this ends
        if proc.exit_code == 0:
            return
        if proc.stop_requested == "killed":
            why = f"was killed (timeout {BUILD_TIMEOUT_S} s or the process API)"
        else:
            why = f"failed with exit code {proc.exit_code}"
        raise DeployFailed(f"build step `{step}` {why}; build log (tail):\n{_tail(proc)}")

    async def _wait_listening(self, processes: ProcessManager, app: Process, port: int) -> None:
        """Until the app's own session listens on `port`; its end or the deadline is a failure."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while not app.done.is_set() and loop.time() < deadline:
            if port in {p.port for p in await processes.ports(app)}:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(app.done.wait(), 0.1)
        if app.done.is_set():
            raise DeployFailed(
                f"the app (`{app.command}`) exited with code {app.exit_code} before listening "
                f"on port {port} (restarted {app.restart_count} times); app log (tail):\n"
                f"{_tail(app)}"
            )
        with contextlib.suppress(CoveError):
            await processes.stop(app)
        raise DeployFailed(
            f"the app (`{app.command}`) did not listen on port {port} (the PORT variable) within "
            f"{START_TIMEOUT_S} s; it was stopped; app log (tail):\n{_tail(app)}"
        )

    async def _app_preview(self, record: Sandbox, port: int) -> Preview:
        """A public preview on the app's port (made once; one the user made is reused)."""
        name = f"app-{port}"
        try:
            return self._previews.get(record.workspace, record.name, name)
        except NotFound:
            spec = PreviewSpec(port=port, public=True)
            return await self._previews.create(record.workspace, record.name, name, spec)

    async def _watch(self, record: Sandbox, dep: Deployment, app: Process) -> None:
        """A running deploy whose app ends for good (restarts used up, stopped) is failed."""
        await app.done.wait()
        if self._deploys.get(record.id) is not dep or dep.status != DeployStatus.RUNNING:
            return  # replaced by a redeploy, which stopped it
        if app.stop_requested:
            why = f"was {app.stop_requested} through the process API"
        else:
            why = f"exited with code {app.exit_code} after {app.restart_count} restarts"
        dep.fail(f"the app (`{app.command}`) {why}; app log (tail):\n{_tail(app)}")
        await self._persist(record, dep)

    # -- state ----------------------------------------------------------------------------------

    async def _persist(self, record: Sandbox, dep: Deployment) -> None:
        if self._deploys.get(record.id) is not dep or record.status == Status.DELETED:
            return
        message, status = dep.event()
        record.record("deploy", message, status)
        try:
            await self._sandboxes.save(record)  # deploy events live in the sandbox's row
        except Exception:  # the in-memory state stays right; only a restart would miss it
            log.exception("saving the deploy state of %s failed", record.name)

    async def load(self) -> None:
        """After a restart (sandboxes restored first): the newest deploy of each sandbox."""
        for live in self._sandboxes.all_live():
            dep = from_events(live.record.events)
            if dep is None:
                continue
            self._deploys[live.record.id] = dep
            if dep.status == DeployStatus.BUILDING:
                dep.fail("cove restarted during this deploy; deploy again")
                await self._persist(live.record, dep)
            elif dep.status == DeployStatus.RUNNING:
                self._orphans.add(live.record.id)  # its app survived a crash of cove, unsupervised
                with contextlib.suppress(CoveError):
                    dep.url = self._preview_url(await self._app_preview(live.record, dep.port))

    async def sandbox_deleted(self, record: Sandbox) -> None:
        self._deploys.pop(record.id, None)
        self._orphans.discard(record.id)
        self._apps.pop(record.id, None)
        for task in self._tasks.pop(record.id, set()):
            task.cancel()

    async def close(self) -> None:
        tasks = [t for ts in self._tasks.values() for t in ts]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, sandbox_id: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        tasks = self._tasks.setdefault(sandbox_id, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def _listeners(processes: ProcessManager, port: int) -> list[int]:
    """Socket inodes listening on `port` anywhere in the sandbox."""
    return [p.inode for p in await processes.ports(None) if p.port == port]


def _tail(proc: Process) -> str:
    return proc.output.logs.text(LOG_TAIL).strip() or "(no output)"

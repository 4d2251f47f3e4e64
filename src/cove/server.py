"""Composition root: settings → store → runtime → services → scheduler → HTTP app."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette

from cove.api.app import build_app
from cove.api.preview.edge import preview_urls
from cove.config import Settings
from cove.domain.sandbox import Sandbox
from cove.egress.base import Egress
from cove.egress.local import LocalEgress
from cove.egress.noop import NoEgress
from cove.runtime.base import RuntimeError_
from cove.runtime.namespaces import NamespaceRuntime
from cove.runtime.oci import ZYGOTE_DIR
from cove.scheduler import loops as scheduler
from cove.services.auth import AuthService
from cove.services.billing import Billing, Policy
from cove.services.deploys import DeployService
from cove.services.jobs import JobService
from cove.services.previews import PreviewService
from cove.services.ratelimit import RateLimiter
from cove.services.runs import RunService
from cove.services.sandboxes import SandboxService
from cove.services.workloads import Workloads
from cove.store.db import create_schema, make_engine
from cove.store.jobs import JobRepo
from cove.store.keys import KeyRepo
from cove.store.ledger import LedgerRepo
from cove.store.previews import PreviewRepo
from cove.store.runs import RunRepo
from cove.store.sandboxes import SandboxRepo
from cove.store.writer import Writer

log = logging.getLogger("cove")


class StartupError(Exception):
    """The platform cannot run on this host; the message says what is missing."""


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.database_url)
        await create_schema(engine)
        runtime = NamespaceRuntime(settings)
        try:
            await runtime.start()
        except RuntimeError_ as exc:
            log.error("cannot start: %s", exc.reason)
            await engine.dispose()
            raise StartupError(exc.reason) from None
        auth = AuthService(KeyRepo(engine))
        await auth.load(settings.api_keys)
        service = SandboxService(
            SandboxRepo(engine, writer := Writer(engine)),  # one SQLite writer for all repos
            runtime,
            settings.max_sandboxes_per_workspace,
            settings.default_disk_mb,
            settings.default_pids,
            egress=make_egress(settings),
        )
        await service.restore()
        previews = PreviewService(PreviewRepo(engine, writer), service)
        await previews.load()
        service.on_deleted.append(previews.sandbox_deleted)
        app.state.previews = previews
        app.state.preview_domain = settings.preview_domain
        app.state.preview_urls = lambda p: preview_urls(
            settings.public_url, settings.preview_domain, p
        )
        app.state.auth = auth
        app.state.billing = Billing(
            LedgerRepo(engine, writer),
            Policy(settings.billing_enforce, settings.billing_refund_unused),
        )
        app.state.rate_limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
        service.on_deleted.append(app.state.billing.sandbox_deleted)  # overtime / refunds
        app.state.sandboxes = service
        app.state.workloads = Workloads(service)  # runs and job tasks
        app.state.runs = RunService(RunRepo(engine, writer), app.state.workloads, app.state.billing)
        deploys = DeployService(
            service,
            previews,
            app.state.billing,
            lambda p: app.state.preview_urls(p)[0],
        )
        await deploys.load()
        service.on_deleted.append(deploys.sandbox_deleted)
        app.state.deploys = deploys
        app.state.sandbox_url = lambda s: sandbox_url(settings, s)
        jobs = JobService(
            JobRepo(engine, writer),
            app.state.workloads,
            service,
            app.state.billing,
            settings.job_concurrency,
        )
        await jobs.restore()  # executions a stop interrupted end as failed
        app.state.jobs = jobs
        loops = scheduler.start(
            service, previews, jobs, settings.expiry_interval_s, settings.cron_tick_s
        )
        app.state.ready = True
        log.info("cove ready at %s", settings.public_url)
        try:
            yield
        finally:
            app.state.ready = False
            for loop in loops:
                loop.cancel()
            await jobs.shutdown()  # before the sandboxes: its tasks' sandboxes are deleted
            await deploys.close()  # before processes close: builds wait on them
            await service.shutdown()
            await runtime.close(destroy_all=True)
            await app.state.billing.close()  # buffered metering, incl. the deletes' settlements
            await engine.dispose()

    return build_app(lifespan)


def make_egress(settings: Settings) -> Egress:
    if not settings.egress:
        return NoEgress()
    if settings.egress_test_hosts:
        log.warning("COVE_EGRESS_TEST_HOSTS is set: for tests only")
    if settings.egress_test_ca:
        log.warning("COVE_EGRESS_TEST_CA is set: for tests only")
    return LocalEgress(
        settings.egress_test_hosts,
        settings.egress_allow_nets,
        settings.egress_transparent,
        ca_dir=settings.data_dir / "egress",  # the CA's key: never inside a sandbox
        shared=(settings.data_dir / "bin", ZYGOTE_DIR),  # read-only in every sandbox
        test_ca=settings.egress_test_ca,
        idle_timeout_s=settings.egress_idle_timeout_s or float("inf"),  # 0: never
    )


def sandbox_url(settings: Settings, sandbox: Sandbox) -> str:
    return f"{settings.public_url}/sbx/{sandbox.id}"

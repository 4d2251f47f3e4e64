"""Composition root: settings → store → runtime → services → scheduler → HTTP app."""

from __future__ import annotations

import asyncio
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
from cove.scheduler.expiry import run_expiry
from cove.services.auth import AuthService
from cove.services.previews import PreviewService
from cove.services.sandboxes import SandboxService
from cove.store.db import create_schema, make_engine
from cove.store.keys import KeyRepo
from cove.store.previews import PreviewRepo
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
        app.state.sandboxes = service
        app.state.sandbox_url = lambda s: sandbox_url(settings, s)
        expiry = asyncio.ensure_future(run_expiry(service, settings.expiry_interval_s))
        app.state.ready = True
        log.info("cove ready at %s", settings.public_url)
        try:
            yield
        finally:
            app.state.ready = False
            expiry.cancel()
            await service.shutdown()
            await runtime.close(destroy_all=True)
            await engine.dispose()

    return build_app(lifespan)


def make_egress(settings: Settings) -> Egress:
    if not settings.egress:
        return NoEgress()
    if settings.egress_test_hosts:
        log.warning("COVE_EGRESS_TEST_HOSTS is set: for tests only")
    return LocalEgress(
        settings.egress_test_hosts, settings.egress_allow_nets, settings.egress_transparent
    )


def sandbox_url(settings: Settings, sandbox: Sandbox) -> str:
    return f"{settings.public_url}/sbx/{sandbox.id}"

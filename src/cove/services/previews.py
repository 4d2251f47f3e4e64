"""Preview use cases: CRUD of previews and tokens, and the access check of preview traffic.

Previews and tokens are served from memory (every request through a preview looks them up) and
written through to the database, so they survive a restart. A preview belongs to one live
sandbox; deleting the sandbox deletes its previews and their tokens. Expiry: requests are refused
the moment a preview or token expires; the scheduler's sweep (expire_due) then deletes expired
previews with their tokens, and expired tokens once PreviewToken.purge_at has passed.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from cove.domain.durations import parse_duration, parse_timestamp, utcnow
from cove.domain.errors import Conflict, InvalidRequest, NotFound, Unauthorized
from cove.domain.preview import (
    Preview,
    PreviewSpec,
    PreviewToken,
    new_preview_id,
    new_token_name,
    new_token_value,
)
from cove.domain.sandbox import Sandbox, Status
from cove.services.sandboxes import LiveSandbox, SandboxService
from cove.store.previews import PreviewRepo

log = logging.getLogger("cove.previews")
DEFAULT_TOKEN_LIFETIME = timedelta(days=1)


class PreviewService:
    def __init__(self, repo: PreviewRepo, sandboxes: SandboxService) -> None:
        self._repo = repo
        self._sandboxes = sandboxes
        self._by_key: dict[tuple[str, str], Preview] = {}  # (sandbox id, preview name)
        self._tokens: dict[str, PreviewToken] = {}  # by token value
        # No deadline before this: the sweep skips its scan until then (None = nothing due).
        self._next_due: datetime | None = None

    async def load(self) -> None:
        """After a restart: previews of sandboxes that are gone are deleted."""
        previews, tokens = await self._repo.all()
        live_ids = set()
        for p in previews:
            try:
                self._sandboxes.get_by_id(p.workspace, p.sandbox_id)
            except NotFound:
                await self._repo.delete(p.id)
                continue
            self._by_key[(p.sandbox_id, p.name)] = p
            self._due(p.expires_at)
            live_ids.add(p.id)
        for t in tokens:
            if t.preview_id in live_ids:
                self._tokens[t.value] = t
                self._due(t.purge_at())

    # -- previews -------------------------------------------------------------------------

    def _sandbox(self, workspace: str, sandbox_name: str) -> Sandbox:
        record = self._sandboxes.get(workspace, sandbox_name).record
        if record.status in (Status.DELETING, Status.DELETED):
            raise NotFound(f"sandbox {sandbox_name!r} not found")
        return record

    async def create(
        self, workspace: str, sandbox_name: str, name: str, spec: PreviewSpec
    ) -> Preview:
        sandbox = self._sandbox(workspace, sandbox_name)
        if (sandbox.id, name) in self._by_key:
            raise Conflict(f"preview {name!r} already exists")
        preview = Preview(new_preview_id(), workspace, sandbox.id, sandbox.name, name, spec)
        preview.expires_at = _expiry(spec)
        self._by_key[(sandbox.id, name)] = preview
        self._due(preview.expires_at)
        try:
            await self._repo.insert(preview)
        except BaseException:
            self._by_key.pop((sandbox.id, name), None)
            raise
        return preview

    def get(self, workspace: str, sandbox_name: str, name: str) -> Preview:
        sandbox = self._sandbox(workspace, sandbox_name)
        preview = self._by_key.get((sandbox.id, name))
        if preview is None:
            raise NotFound(f"preview {name!r} not found")
        return preview

    def list(self, workspace: str, sandbox_name: str) -> list[Preview]:
        sandbox = self._sandbox(workspace, sandbox_name)
        found = [p for (sid, _), p in self._by_key.items() if sid == sandbox.id]
        return sorted(found, key=lambda p: (p.created_at, p.name))

    async def replace(
        self, workspace: str, sandbox_name: str, name: str, spec: PreviewSpec
    ) -> Preview:
        preview = self.get(workspace, sandbox_name, name)
        preview.spec = spec
        preview.expires_at = _expiry(spec)
        preview.updated_at = utcnow()
        self._due(preview.expires_at)
        await self._repo.save(preview)
        return preview

    async def delete(self, workspace: str, sandbox_name: str, name: str) -> Preview:
        preview = self.get(workspace, sandbox_name, name)
        await self._forget(preview)
        return preview

    async def _forget(self, preview: Preview) -> None:
        self._by_key.pop((preview.sandbox_id, preview.name), None)
        for value in [v for v, t in self._tokens.items() if t.preview_id == preview.id]:
            del self._tokens[value]
        await self._repo.delete(preview.id)

    async def sandbox_deleted(self, sandbox: Sandbox) -> None:
        for preview in [p for (sid, _), p in self._by_key.items() if sid == sandbox.id]:
            await self._forget(preview)

    # -- tokens ---------------------------------------------------------------------------

    async def create_token(
        self, workspace: str, sandbox_name: str, preview_name: str, expires_at: datetime | None
    ) -> tuple[Preview, PreviewToken]:
        preview = self.get(workspace, sandbox_name, preview_name)
        expires_at = expires_at or utcnow() + DEFAULT_TOKEN_LIFETIME
        token = PreviewToken(new_token_name(), preview.id, new_token_value(), expires_at)
        await self._repo.insert_token(token)
        self._tokens[token.value] = token
        self._due(token.purge_at())
        return preview, token

    def tokens(
        self, workspace: str, sandbox_name: str, preview_name: str
    ) -> tuple[Preview, list[PreviewToken]]:
        preview = self.get(workspace, sandbox_name, preview_name)
        found = [t for t in self._tokens.values() if t.preview_id == preview.id]
        return preview, sorted(found, key=lambda t: (t.created_at, t.name))

    async def delete_token(
        self, workspace: str, sandbox_name: str, preview_name: str, ref: str
    ) -> PreviewToken:
        """By token name or by token value (the SDK's own tests pass the value)."""
        preview, tokens = self.tokens(workspace, sandbox_name, preview_name)
        for token in tokens:
            if ref in (token.name, token.value):
                self._tokens.pop(token.value, None)  # stops working now, before the write
                await self._repo.delete_token(token.value)
                return token
        raise NotFound(f"token {ref!r} not found on preview {preview_name!r}")

    # -- expiry ---------------------------------------------------------------------------

    def _due(self, deadline: datetime | None) -> None:
        if deadline is not None and (self._next_due is None or deadline < self._next_due):
            self._next_due = deadline

    async def expire_due(self, now: datetime | None = None) -> None:
        """Deletes expired previews (and their tokens) and tokens past their purge time."""
        now = now or utcnow()
        if self._next_due is None or now < self._next_due:
            return
        # Decided in one synchronous step: creations during the awaits below lower _next_due.
        self._next_due = None
        previews: list[Preview] = []
        tokens: list[PreviewToken] = []
        for p in self._by_key.values():
            if p.expired(now):
                previews.append(p)
            else:
                self._due(p.expires_at)
        for t in self._tokens.values():
            if t.purge_at() <= now:
                tokens.append(t)
            else:
                self._due(t.purge_at())
        try:
            for preview in previews:
                log.info("preview %s of sandbox %s expired", preview.name, preview.sandbox_name)
                await self._forget(preview)
            for token in tokens:
                if self._tokens.pop(token.value, None) is not None:
                    await self._repo.delete_token(token.value)
        except BaseException:
            self._due(now)  # what is left is retried by the next sweep
            raise

    # -- traffic --------------------------------------------------------------------------

    def find(self, sandbox_id: str, name: str) -> Preview:
        """The preview a request addresses (404 if absent, expired or its sandbox is gone)."""
        preview = self._by_key.get((sandbox_id, name))
        if preview is None or preview.expired():
            raise NotFound(f"preview {name!r} not found")
        try:
            live = self._sandboxes.get_by_id(preview.workspace, sandbox_id)
        except NotFound:
            raise NotFound(f"preview {name!r} not found") from None
        if live.record.status in (Status.DELETING, Status.DELETED):
            raise NotFound(f"preview {name!r} not found")
        return preview

    def authorize(self, preview: Preview, token: str | None) -> LiveSandbox:
        """The running sandbox behind a preview request; 401 without a valid token (private)."""
        live = self._sandboxes.get_by_id(preview.workspace, preview.sandbox_id)
        if not preview.spec.public:
            found = self._tokens.get(token) if token else None
            if found is None or found.preview_id != preview.id:
                raise Unauthorized(
                    "this preview is private: send a token as X-Blaxel-Preview-Token "
                    "or ?bl_preview_token="
                )
            if found.expired():
                raise Unauthorized("the preview token has expired")
        live.require_running()
        live.record.touch()
        return live


def _expiry(spec: PreviewSpec) -> datetime | None:
    deadlines = []
    if spec.ttl:
        deadlines.append(utcnow() + timedelta(seconds=parse_duration(spec.ttl, "spec.ttl")))
    if spec.expires:
        deadlines.append(parse_timestamp(spec.expires, "spec.expires"))
    return min(deadlines) if deadlines else None


def parse_expiry(value: str | None) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest("spec.expiresAt must be an ISO 8601 date")
    return parse_timestamp(value, "spec.expiresAt")


__all__ = ["PreviewService", "parse_expiry"]

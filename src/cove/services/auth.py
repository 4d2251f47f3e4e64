"""API-key authentication. Keys are stored hashed; lookups are served from memory."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from cove.config import ApiKeySeed
from cove.domain.errors import Forbidden, Unauthorized
from cove.store.keys import KeyRepo, hash_key


def dollars_to_micros(value: str) -> int:
    try:
        micros = Decimal(value) * 1_000_000
    except InvalidOperation:
        raise ValueError(f"balance {value!r} is not a decimal amount") from None
    return int(micros)


class AuthService:
    def __init__(self, keys: KeyRepo) -> None:
        self._keys = keys
        self._by_hash: dict[str, str] = {}

    async def load(self, seeds: list[ApiKeySeed]) -> None:
        for seed in seeds:
            balance = dollars_to_micros(seed.balance) if seed.balance else None
            await self._keys.seed(seed.key, seed.workspace, balance)
        self._by_hash = await self._keys.all()

    def authenticate(self, authorization: str | None, workspace: str | None) -> str:
        """Workspace of a `Bearer <key>` header value; the workspace header must match it."""
        token = _bearer(authorization)
        if token is None:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        found = self._by_hash.get(hash_key(token))
        if found is None:  # lookup by digest: no timing signal about the key itself
            raise Unauthorized("invalid API key")
        if workspace and workspace != found:
            raise Forbidden(f"this API key has no access to workspace {workspace!r}")
        return found


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()

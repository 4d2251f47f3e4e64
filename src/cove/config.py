"""One settings object, read from COVE_* environment variables. Defaults work on a laptop."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ValueError(f"{name}={raw!r} is not a whole number")
    return int(raw)


@dataclass(frozen=True)
class ApiKeySeed:
    key: str
    workspace: str
    balance: str | None = None  # decimal dollars, e.g. "25.00"


def parse_api_keys(raw: str) -> list[ApiKeySeed]:
    """`key:workspace[:balance],…` → seeds; malformed entries raise ValueError."""
    seeds = []
    for entry in filter(None, (e.strip() for e in raw.split(","))):
        parts = entry.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise ValueError(f"COVE_API_KEYS entry {entry!r} is not key:workspace[:balance]")
        seeds.append(ApiKeySeed(parts[0], parts[1], parts[2] if len(parts) == 3 else None))
    return seeds


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    images_dir: Path
    database_url: str
    api_keys: list[ApiKeySeed] = field(default_factory=list)
    public_url: str = ""  # base URL clients use to reach this server; derived from host:port
    pool_size: int = 8  # warm sandboxes kept per image
    max_sandboxes_per_workspace: int = 100
    default_disk_mb: int = 4096
    default_pids: int = 1024
    expiry_interval_s: float = 0.25

    @property
    def run_dir(self) -> Path:
        """Per-sandbox state (bundles, mounts, control sockets)."""
        return self.data_dir / "sandboxes"

    @classmethod
    def from_env(cls, public_url: str = "") -> Settings:
        data_dir = Path(os.environ.get("COVE_DATA_DIR") or "/var/lib/cove").absolute()
        images_dir = Path(os.environ.get("COVE_IMAGES_DIR") or data_dir / "images").absolute()
        return cls(
            data_dir=data_dir,
            images_dir=images_dir,
            database_url=os.environ.get("COVE_DATABASE_URL")
            or f"sqlite+aiosqlite:///{data_dir / 'cove.db'}",
            api_keys=parse_api_keys(os.environ.get("COVE_API_KEYS", "")),
            public_url=(os.environ.get("COVE_PUBLIC_URL") or public_url).rstrip("/"),
            pool_size=_int("COVE_POOL_SIZE", 8),
            max_sandboxes_per_workspace=_int("COVE_MAX_SANDBOXES", 100),
            default_disk_mb=_int("COVE_DISK_MB", 4096),
            default_pids=_int("COVE_PIDS_LIMIT", 1024),
        )

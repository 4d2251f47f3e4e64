"""One settings object, read from COVE_* environment variables. Defaults work on a laptop."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


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


def parse_test_hosts(raw: str) -> dict[str, tuple[str, int]]:
    """`name=ip:port,…` → {name: (ip, port)}; malformed entries raise ValueError."""
    hosts = {}
    for entry in filter(None, (e.strip() for e in raw.split(","))):
        name, _, target = entry.partition("=")
        ip, _, port = target.rpartition(":")
        ip = ip.strip("[]")
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            ip = ""
        if not name or not ip or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"COVE_EGRESS_TEST_HOSTS entry {entry!r} is not name=ip:port")
        hosts[name.strip().lower().rstrip(".")] = (ip, int(port))
    return hosts


def parse_networks(raw: str) -> tuple[IPNetwork, ...]:
    """`10.0.0.0/8,fd00::/8,…` → networks; a malformed entry raises ValueError."""
    nets = []
    for entry in filter(None, (e.strip() for e in raw.split(","))):
        try:
            nets.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"COVE_EGRESS_ALLOW_NETS entry {entry!r} is not a network") from None
    return tuple(nets)


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "on", "true", "yes"):
        return True
    if raw in ("0", "off", "false", "no"):
        return False
    raise ValueError(f"{name}={raw!r} is not on or off")


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
    preview_domain: str = "localhost"  # host-form preview URLs: <label>.<preview_domain>
    # Egress (issue 5): every sandbox gets a proxy on 127.0.0.1:3128 and a resolver on
    # 127.0.0.1:53 inside its netns. COVE_EGRESS=off gives sandboxes no network at all.
    egress: bool = True
    # Also capture programs that ignore the proxy variables (a route over lo + a nat redirect in
    # each sandbox's netns; needs `ip`, `iptables` and `nsenter` on the host). Off by default.
    egress_transparent: bool = False
    # Tests only, off by default: `name=127.0.0.1:port,…` lets the proxy send `name` to that
    # address (the requested port is ignored). Only these names may reach loopback/private ranges.
    egress_test_hosts: dict[str, tuple[str, int]] = field(default_factory=dict)
    # Private/reserved networks sandboxes may reach after all (`10.1.2.0/24,…`), e.g. where the
    # host's DNS points package registries at a mirror. Loopback, link-local and the host's
    # own addresses stay refused.
    egress_allow_nets: tuple[IPNetwork, ...] = ()

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
            preview_domain=os.environ.get("COVE_PREVIEW_DOMAIN", "localhost").strip(".").lower(),
            egress=_flag("COVE_EGRESS", True),
            egress_transparent=_flag("COVE_EGRESS_TRANSPARENT", False),
            egress_test_hosts=parse_test_hosts(os.environ.get("COVE_EGRESS_TEST_HOSTS", "")),
            egress_allow_nets=parse_networks(os.environ.get("COVE_EGRESS_ALLOW_NETS", "")),
        )

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


def parse_rate(raw: str) -> float:
    """`20/s`, `600/m`, `20` (per second) → requests per second; `off` or `0` → 0 (no limit)."""
    text = raw.strip().lower()
    if text in ("off", "0", "none"):
        return 0.0
    count, _, unit = text.partition("/")
    per = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}.get(unit.strip())
    try:
        rate = float(count) / per if per else -1.0
    except ValueError:
        rate = -1.0
    if not rate > 0 or rate == float("inf"):
        raise ValueError(f"COVE_RATE_LIMIT={raw!r} is not like '20/s', '600/m', '20' or 'off'")
    return rate


def _billing(raw: str) -> bool:
    """COVE_BILLING: off (default, usage is recorded, never refused) or enforce."""
    text = raw.strip().lower()
    if text not in ("", "off", "enforce"):
        raise ValueError(f"COVE_BILLING={raw!r} is not off or enforce")
    return text == "enforce"


def _file(name: str) -> Path | None:
    raw = os.environ.get(name, "").strip()
    if raw and not Path(raw).is_file():
        raise ValueError(f"{name}={raw!r} is not a file")
    return Path(raw).absolute() if raw else None


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise ValueError(f"{name}={raw!r} is not a number of seconds (0 < s <= 3600)")
    return value


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
    # A proxied connection or CONNECT tunnel that moves no byte either way this long is closed.
    egress_idle_timeout_s: int = 300
    # Tests only, off by default: one more CA file the proxy trusts when it verifies upstreams
    # it intercepts (a local HTTPS test server); the host's system CAs are always trusted.
    egress_test_ca: Path | None = None
    # Metering (issue 7): usage is always recorded in the ledger; a price the balance does not
    # cover is refused (402) only when enforcing. Unused sandbox time is refunded only if asked.
    billing_enforce: bool = False
    billing_refund_unused: bool = False
    # Per API key token bucket for /v0 and /v1 (0 = no limit): refill per second, capacity.
    rate_limit: float = 100.0
    rate_burst: int = 2000
    # Jobs: tasks of one execution running at once; how often the cron loop looks for due ticks.
    job_concurrency: int = 4
    cron_tick_s: float = 1.0

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
            egress_idle_timeout_s=_int("COVE_EGRESS_IDLE_TIMEOUT", 300),
            egress_test_ca=_file("COVE_EGRESS_TEST_CA"),
            billing_enforce=_billing(os.environ.get("COVE_BILLING", "")),
            billing_refund_unused=_flag("COVE_BILLING_REFUND_UNUSED", False),
            rate_limit=(rate := parse_rate(os.environ.get("COVE_RATE_LIMIT") or "100/s")),
            rate_burst=_int("COVE_RATE_LIMIT_BURST", max(1, int(rate * 20))),
            job_concurrency=max(1, _int("COVE_JOB_CONCURRENCY", 4)),
            cron_tick_s=_seconds("COVE_CRON_TICK_S", 1.0),
        )

"""Seed 000's price list in integer micro-dollars (1 USD = 1,000,000 micros); never floats."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from cove.domain.errors import InvalidRequest

CURRENCY = "USD"
MICROS_PER_USD = 1_000_000
# Per second of sandbox time; seed 000 "Pricing": xs $0.000023/s … xl $0.000368/s.
TIER_RATE_MICROS = {"xs": 23, "s": 46, "m": 92, "l": 184, "xl": 368}
# "Deploy, list, get, delete" and every job call: $0.00001.
NOMINAL_MICROS = 10


def sandbox_price(tier: str, seconds: int) -> int:
    """Upfront price of `seconds` of a `tier` sandbox (create: ttl; PATCH: the added time)."""
    return TIER_RATE_MICROS[tier] * max(0, int(seconds))


def memory_price(memory_mb: int, seconds: int) -> int:
    """v0 sandboxes have a memory size, not a tier: the xs rate per 2 GiB, rounded up."""
    per_mb_s = TIER_RATE_MICROS["xs"] * max(0, int(memory_mb)) * max(0, int(seconds))
    return -(-per_mb_s // 2048)


def run_price(timeout_s: int) -> int:
    """A run is billed as an xs sandbox for its whole timeout (30 s → 690 micros)."""
    return sandbox_price("xs", timeout_s)


def format_usd(micros: int) -> str:
    """690 → "0.00069", 25_000_000 → "25.00": exact, at least cents, no trailing zeros past them."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_USD)
    digits = f"{frac:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}{whole}.{digits}"


def parse_usd(text: str) -> int:
    """ "25.00" / "0.5" / "1e-6" → micros; at most 6 decimals, no sign games."""
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise InvalidRequest(f"amount {text!r} is not a number of dollars") from None
    if not value.is_finite():
        raise InvalidRequest(f"amount {text!r} is not a number of dollars")
    micros = value * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise InvalidRequest(f"amount {text!r} has more than 6 decimals")
    return int(micros)

"""Metering and payment (issue 7, seed 000 pricing): charges, 402, 422, 429, admin CLI."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import own_server, unique
from server import COVE, CoveServer, eventually

XS_PER_S, S_PER_S = 23, 46  # micro-dollars per second (seed 000)
# Each test has a workspace (and key) of its own, so balances never mix.
ENFORCED = {
    "w-create": "1.00",
    "w-poor": "0.0001",
    "w-race": "0.00414",  # exactly 3 × (xs × 60 s = 1380 micros)
    "w-limit": "1.00",
    "w-v0": "1.00",
}


def _keys(balances: dict[str, str | None]) -> str:
    return ",".join(f"k-{w}:{w}" + (f":{b}" if b else "") for w, b in balances.items())


@pytest.fixture(scope="module")
def enforced() -> Iterator[CoveServer]:
    keys = _keys(ENFORCED)  # type: ignore[arg-type]
    with own_server(
        COVE_API_KEYS=keys, COVE_BILLING="enforce", COVE_MAX_SANDBOXES="3", COVE_EGRESS="off"
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def relaxed() -> Iterator[CoveServer]:
    """Billing off (record only), unused time refunded, and a tiny per-key rate limit."""
    with own_server(
        COVE_API_KEYS=_keys({"w-off": None, "w-rate": "1.00", "w-other": None}),
        COVE_RATE_LIMIT="1/s",
        COVE_RATE_LIMIT_BURST="6",
        COVE_BILLING_REFUND_UNUSED="on",
        COVE_EGRESS="off",
    ) as srv:
        yield srv


def client(srv: CoveServer, workspace: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer k-{workspace}"}
    return httpx.Client(base_url=srv.url, headers=headers, timeout=60)


def admin(srv: CoveServer, *args: str) -> object:
    """`cove admin …` against the running server's data dir, parsed from its JSON output."""
    run = subprocess.run(
        [str(COVE), "admin", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**srv.env},
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def account(srv: CoveServer, workspace: str) -> dict:
    (found,) = admin(srv, "usage", workspace)  # type: ignore[misc]
    return found


def kind(acc: dict, name: str) -> tuple[int, int]:
    """(count, signed micros) of one ledger kind."""
    entry = acc["kinds"].get(name, {"count": 0, "micros": 0})
    return entry["count"], entry["micros"]


def patient(call: Callable[[], httpx.Response]) -> httpx.Response:
    """`call`, again after each 429's Retry-After (bounded)."""
    for _ in range(10):
        r = call()
        if r.status_code != 429:
            return r
        time.sleep(int(r.headers["Retry-After"]))
    raise AssertionError("still rate limited")


def wait_gone(api: httpx.Client, name: str) -> None:
    """Until the v0 surface no longer has it (v0 reads are free: no ledger noise)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if patient(lambda: api.get(f"/v0/sandboxes/{name}")).status_code == 404:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} still exists")


def test_create_extend_get_delete_are_charged_upfront(enforced):  # type: ignore[no-untyped-def]
    name = unique("bill")
    with client(enforced, "w-create") as api:
        r = api.post("/v1/sandboxes", json={"name": name, "tier": "s", "ttl": "2h"})
        assert r.status_code == 201, r.text
        acc = account(enforced, "w-create")
        assert kind(acc, "sandbox") == (1, -S_PER_S * 7200)  # $0.3312, seed 000's s rate
        assert acc["balanceMicros"] == 1_000_000 - 331_200

        before = api.get(f"/v1/sandboxes/{name}").json()["expiresAt"]
        patched = api.patch(f"/v1/sandboxes/{name}", json={"ttl": "30m"})
        assert patched.status_code == 200 and patched.json()["expiresAt"] > before
        assert api.get("/v1/sandboxes").status_code == 200
        assert api.delete(f"/v1/sandboxes/{name}").status_code == 204
        wait_gone(api, name)

    acc = account(enforced, "w-create")
    assert kind(acc, "extend") == (1, -S_PER_S * 1800)  # tier × added time
    assert kind(acc, "nominal") == (3, -30)  # get, list, delete: $0.00001 each
    assert "refund" not in acc["kinds"]  # unused time is kept unless configured
    assert acc["balanceMicros"] == 1_000_000 - 331_200 - 82_800 - 30
    assert acc["balance"] == "0.58597"


def test_402_changes_nothing_and_top_up_unblocks(enforced):  # type: ignore[no-untyped-def]
    name = unique("poor")
    with client(enforced, "w-poor") as api:
        r = api.post("/v1/sandboxes", json={"name": name, "tier": "xs", "ttl": 60})
        assert r.status_code == 402, r.text
        body = r.json()
        assert body["error"] == "payment_required" and body["statusCode"] == 402
        assert body["price"] == "0.00138" and body["currency"] == "USD"
        assert body["balance"] == "0.0001"
        assert "cove admin top-up w-poor" in body["action"]
        # The v0 surface (Blaxel SDK) is metered and refused the same way.
        v0 = api.post("/v0/sandboxes", json={"metadata": {"name": name}, "spec": {}})
        assert v0.status_code == 402 and v0.json()["price"] == "0.6624"  # 4 GiB, 4 h
        # No side effect: nothing exists, nothing was charged, the name is free.
        assert api.get(f"/v0/sandboxes/{name}").status_code == 404
        assert api.get("/v0/sandboxes").json() == []
        acc = account(enforced, "w-poor")
        assert acc["balanceMicros"] == 100 and "sandbox" not in acc["kinds"]

        assert admin(enforced, "top-up", "w-poor", "0.01")["balance"] == "0.0101"  # type: ignore[index]
        r = api.post("/v1/sandboxes", json={"name": name, "tier": "xs", "ttl": 60})
        assert r.status_code == 201, r.text
        # Extending past the balance is refused and leaves the expiry as it was.
        expires = r.json()["expiresAt"]
        more = api.patch(f"/v1/sandboxes/{name}", json={"ttl": "1h"})
        assert more.status_code == 402 and more.json()["price"] == "0.0828"
        assert api.get(f"/v1/sandboxes/{name}").json()["expiresAt"] == expires  # + $0.00001
        assert account(enforced, "w-poor")["balanceMicros"] == 10_100 - 1380 - 10
        assert api.delete(f"/v1/sandboxes/{name}").status_code == 204
        wait_gone(api, name)
    acc = account(enforced, "w-poor")
    assert acc["balanceMicros"] == 10_100 - 1380 - 20  # the get's and delete's nominal charges
    assert kind(acc, "top_up") == (1, 10_000)


def test_concurrent_creates_never_overdraw(enforced):  # type: ignore[no-untyped-def]
    names = [unique("race") for _ in range(10)]
    with client(enforced, "w-race") as api:

        def create(name: str) -> int:
            body = {"name": name, "tier": "xs", "ttl": 60}
            return api.post("/v1/sandboxes", json=body).status_code

        with ThreadPoolExecutor(10) as pool:
            codes = list(pool.map(create, names))
        assert sorted(codes) == [201] * 3 + [402] * 7, codes
        acc = account(enforced, "w-race")
        assert acc["balanceMicros"] == 0 and kind(acc, "sandbox") == (3, -3 * 1380)
        listed = {s["metadata"]["name"] for s in api.get("/v0/sandboxes").json()}
        assert listed == {n for n, c in zip(names, codes, strict=True) if c == 201}
        for name in listed:  # v0 delete: free, so it works at a zero balance
            assert api.delete(f"/v0/sandboxes/{name}").status_code == 200
        for name in listed:
            wait_gone(api, name)


def test_sandbox_limit_is_422_without_side_effect(enforced):  # type: ignore[no-untyped-def]
    names = [unique("lim") for _ in range(4)]
    with client(enforced, "w-limit") as api:
        for name in names[:3]:
            r = api.post("/v1/sandboxes", json={"name": name, "tier": "xs", "ttl": 60})
            assert r.status_code == 201, r.text
        balance = account(enforced, "w-limit")["balanceMicros"]
        assert balance == 1_000_000 - 3 * 1380
        r = api.post("/v1/sandboxes", json={"name": names[3], "tier": "xs", "ttl": 60})
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "sandbox_limit_exceeded" and r.json()["statusCode"] == 422
        assert api.get(f"/v0/sandboxes/{names[3]}").status_code == 404
        assert account(enforced, "w-limit")["balanceMicros"] == balance  # given back
        for name in names[:3]:
            assert api.delete(f"/v0/sandboxes/{name}").status_code == 200
        for name in names[:3]:
            wait_gone(api, name)


def test_v0_creates_are_metered_by_memory_and_ttl(enforced):  # type: ignore[no-untyped-def]
    timed, open_ended = unique("v0"), unique("v0")
    with client(enforced, "w-v0") as api:
        spec = {"runtime": {"memory": 2048, "ttl": "60s"}}  # 2 GiB = the xs rate
        r = api.post("/v0/sandboxes", json={"metadata": {"name": timed}, "spec": spec})
        assert r.status_code == 200, r.text
        spec = {"runtime": {"memory": 1024}}  # no ttl: 4 h upfront at half the xs rate
        r = api.post("/v0/sandboxes", json={"metadata": {"name": open_ended}, "spec": spec})
        assert r.status_code == 200, r.text
        again = api.post(  # createIfNotExist of a live sandbox creates nothing: not charged
            "/v0/sandboxes?createIfNotExist=true",
            json={"metadata": {"name": open_ended}, "spec": spec},
        )
        assert again.status_code == 200
        acc = account(enforced, "w-v0")
        assert kind(acc, "sandbox") == (2, -(60 * XS_PER_S + 4 * 3600 * XS_PER_S // 2))
        for name in (timed, open_ended):
            assert api.delete(f"/v0/sandboxes/{name}").status_code == 200
        for name in (timed, open_ended):
            wait_gone(api, name)


def test_billing_off_records_usage_but_never_refuses(relaxed):  # type: ignore[no-untyped-def]
    name = unique("off")
    with client(relaxed, "w-off") as api:  # balance 0
        r = api.post("/v1/sandboxes", json={"name": name, "tier": "xs", "ttl": "1h"})
        assert r.status_code == 201, r.text
        assert api.delete(f"/v1/sandboxes/{name}").status_code == 204
        wait_gone(api, name)
    # without enforcement the ledger entry is written just after the answer
    assert eventually(lambda: kind(account(relaxed, "w-off"), "sandbox") == (1, -XS_PER_S * 3600))
    acc = account(relaxed, "w-off")
    # COVE_BILLING_REFUND_UNUSED=on gives back the unused part of the hour, settled on delete.
    deadline = time.monotonic() + 30
    while "refund" not in acc["kinds"] and time.monotonic() < deadline:
        time.sleep(0.1)
        acc = account(relaxed, "w-off")
    count, refunded = kind(acc, "refund")
    assert count == 1 and 0 < refunded <= XS_PER_S * 3600
    assert acc["balanceMicros"] == -XS_PER_S * 3600 - 10 + refunded  # below zero: not enforced


def test_rate_limit_is_429_with_retry_after_per_key(relaxed):  # type: ignore[no-untyped-def]
    name = unique("rate")
    with client(relaxed, "w-rate") as api, client(relaxed, "w-other") as other:
        created = api.post("/v0/sandboxes", json={"metadata": {"name": name}, "spec": {}})
        assert created.status_code == 200, created.text
        sbx = created.json()["metadata"]["url"].removeprefix(relaxed.url)
        limited = None
        for _ in range(20):  # burst 6 at 1/s: the bucket runs dry long before 20
            r = api.get("/v1/sandboxes")
            if r.status_code == 429:
                limited = r
                break
            assert r.status_code == 200, r.text
        assert limited is not None
        body = limited.json()
        assert body["error"] == "rate_limited" and body["statusCode"] == 429
        wait = int(limited.headers["Retry-After"])
        assert 1 <= wait <= 5 and body["retryAfter"] == wait
        # The v0 surface shares the key's bucket and answers in its own shape.
        v0 = next(r for r in (api.get("/v0/sandboxes") for _ in range(20)) if r.status_code == 429)
        assert v0.json()["code"] == 429 and v0.headers["Retry-After"].isdigit()
        # The in-sandbox API, other keys, health checks and unauthenticated calls are not
        # affected.
        for _ in range(10):
            assert api.get(sbx + "/process").status_code == 200
        assert other.get("/v1/sandboxes").status_code == 200
        assert httpx.get(relaxed.url + "/health").status_code == 200
        assert httpx.get(relaxed.url + "/v1/sandboxes").status_code == 401
        time.sleep(int(v0.headers["Retry-After"]))
        assert api.get("/v1/sandboxes").status_code == 200
        assert patient(lambda: api.delete(f"/v0/sandboxes/{name}")).status_code == 200
        wait_gone(api, name)


def test_seed_000_price_table() -> None:
    from cove.domain.errors import InvalidRequest
    from cove.domain.pricing import format_usd, parse_usd, run_price, sandbox_price

    assert [format_usd(run_price(t)) for t in (30, 60, 600)] == ["0.00069", "0.00138", "0.0138"]
    per_second = [format_usd(sandbox_price(t, 1)) for t in ("xs", "s", "m", "l", "xl")]
    assert per_second == ["0.000023", "0.000046", "0.000092", "0.000184", "0.000368"]
    assert parse_usd("25.00") == 25_000_000 and format_usd(-5) == "-0.000005"
    for bad in ("0.0000001", "NaN", "abc"):
        with pytest.raises(InvalidRequest):
            parse_usd(bad)

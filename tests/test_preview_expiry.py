"""Scheduled clean-up of previews (issue 6): a preview past its spec.ttl or spec.expires (a
session's preview carries its expiry there) is deleted with its tokens; an expired token stays
listed as expired for as long as it was valid (at most an hour), then it is deleted too. Checked
through the API and in the server's database."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from conftest import unique
from server import eventually


@pytest.fixture(scope="module")
def box(server) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with server.client("ws-a") as c:
        name = unique("pexp")
        r = c.post("/v0/sandboxes", json={"metadata": {"name": name}, "spec": {}})
        assert r.status_code == 200, r.text
        yield name
        c.delete(f"/v0/sandboxes/{name}")


def rows(server, table: str, where: str, value: str) -> int:  # type: ignore[no-untyped-def]
    db = sqlite3.connect(f"file:{server.data_dir / 'cove.db'}?mode=ro", uri=True)
    try:
        return db.execute(f"select count(*) from {table} where {where} = ?", (value,)).fetchone()[0]
    finally:
        db.close()


def preview_id(server, preview: str) -> str:  # type: ignore[no-untyped-def]
    db = sqlite3.connect(f"file:{server.data_dir / 'cove.db'}?mode=ro", uri=True)
    try:
        found = db.execute("select id from previews where name = ?", (preview,)).fetchall()
    finally:
        db.close()
    assert len(found) == 1, found  # names are unique() here
    return found[0][0]


def in_seconds(s: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=s)).isoformat()


@pytest.mark.parametrize(
    "spec",
    [
        {"port": 3000, "public": True, "ttl": "2s"},
        {"port": 443, "public": False, "expires": "SOON"},  # how the SDK makes a session
    ],
    ids=["ttl", "session-expires"],
)
def test_an_expired_preview_is_deleted_with_its_tokens(server, api, box, spec):  # type: ignore[no-untyped-def]
    name = unique("session" if spec["port"] == 443 else "ttl")
    if spec.get("expires") == "SOON":
        spec = {**spec, "expires": in_seconds(2)}
    base = f"/v0/sandboxes/{box}/previews"
    assert api.post(base, json={"metadata": {"name": name}, "spec": spec}).status_code == 200
    token = api.post(f"{base}/{name}/tokens", json={"spec": {"expiresAt": in_seconds(3600)}})
    assert token.status_code == 200, token.text
    pid = preview_id(server, name)
    assert rows(server, "previews", "id", pid) == 1
    assert rows(server, "preview_tokens", "preview_id", pid) == 1
    assert eventually(lambda: api.get(f"{base}/{name}").status_code == 404)
    assert name not in [p["metadata"]["name"] for p in api.get(base).json()]
    assert eventually(lambda: rows(server, "previews", "id", pid) == 0)
    assert eventually(lambda: rows(server, "preview_tokens", "preview_id", pid) == 0)


def test_a_preview_without_expiry_stays(server, api, box):  # type: ignore[no-untyped-def]
    name = unique("keep")
    base = f"/v0/sandboxes/{box}/previews"
    body = {"metadata": {"name": name}, "spec": {"port": 3000, "ttl": "1h"}}
    assert api.post(base, json=body).status_code == 200
    short = unique("short")  # something due, so the sweep runs while "keep" is there
    body = {"metadata": {"name": short}, "spec": {"port": 3000, "ttl": "1s"}}
    assert api.post(base, json=body).status_code == 200
    assert eventually(lambda: api.get(f"{base}/{short}").status_code == 404)
    assert api.get(f"{base}/{name}").status_code == 200


def test_an_expired_token_is_listed_then_purged(server, api, box):  # type: ignore[no-untyped-def]
    name = unique("tok")
    base = f"/v0/sandboxes/{box}/previews"
    assert api.post(base, json={"metadata": {"name": name}, "spec": {"port": 3000}}).is_success
    tokens = f"{base}/{name}/tokens"
    expires = datetime.now(UTC) + timedelta(seconds=3)
    short = api.post(tokens, json={"spec": {"expiresAt": expires.isoformat()}}).json()
    kept = api.post(tokens, json={"spec": {"expiresAt": in_seconds(3600)}}).json()
    pid = preview_id(server, name)
    assert rows(server, "preview_tokens", "preview_id", pid) == 2
    time.sleep(max(0.0, expires.timestamp() - time.time()) + 0.1)
    listed = {t["spec"]["token"]: t["spec"]["expired"] for t in api.get(tokens).json()}
    assert listed == {short["spec"]["token"]: True, kept["spec"]["token"]: False}
    # Listed as expired for as long as it was valid (3 s), then deleted; the other one stays.
    assert eventually(lambda: len(api.get(tokens).json()) == 1)
    assert api.get(tokens).json()[0]["spec"]["token"] == kept["spec"]["token"]
    # the API forgets it first, then its row is deleted (the single writer's next commit)
    assert eventually(lambda: rows(server, "preview_tokens", "value", short["spec"]["token"]) == 0)
    assert rows(server, "preview_tokens", "preview_id", pid) == 1
    assert api.get(f"{base}/{name}").status_code == 200

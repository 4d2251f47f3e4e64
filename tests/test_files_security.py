"""Attacks on the filesystem API: none may read or write outside the sandbox's root, block
the server, or exhaust it. Each test plants host data next to the sandbox and tries to reach it."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import pytest
from conftest import own_server, unique

SECRET = "HOST-SECRET-NEEDLE"


@pytest.fixture
def box(api):  # type: ignore[no-untyped-def]
    name = unique("sec")
    r = api.post(
        "/v0/sandboxes", json={"metadata": {"name": name}, "spec": {"runtime": {"memory": 512}}}
    )
    assert r.status_code == 200, r.text
    yield r.json()["metadata"]["url"]
    api.delete(f"/v0/sandboxes/{name}")


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    (tmp_path / "f").write_text(SECRET + "\n")
    (tmp_path / "secret.py").write_text(SECRET + "\n")
    return tmp_path


def sh(api, url, command, wait=True):  # type: ignore[no-untyped-def]
    r = api.post(
        url + "/process", json={"command": command, "waitForCompletion": wait, "timeout": 120}
    )
    assert r.status_code == 200, r.text
    return r.json()


def no_secret(r) -> None:  # type: ignore[no-untyped-def]
    assert SECRET.encode() not in r.content, (r.request.url, r.text[:300])
    assert r.status_code < 500, (r.request.url, r.status_code, r.text[:300])


def every_reader(api, url, path):  # type: ignore[no-untyped-def]
    """Every API that reads through `path`."""
    p = path.lstrip("/")
    yield api.get(f"{url}/filesystem//{p}")
    yield api.get(f"{url}/filesystem//{p}/f")
    yield api.get(f"{url}/filesystem//{p}/f", headers={"Accept": "application/octet-stream"})
    yield api.get(f"{url}/filesystem//{p}?download=true")
    yield api.get(f"{url}/filesystem/tree//{p}", params={"recursive": "true", "content": "true"})
    yield api.get(f"{url}/filesystem-find//{p}", params={"excludeHidden": "false"})
    yield api.get(f"{url}/filesystem-content-search//{p}", params={"query": SECRET[5:]})
    yield api.get(f"{url}/filesystem-search//{p}", params={"query": "secret"})
    yield api.post(f"{url}/filesystem-copy", json={"source": f"/{p}", "destination": "/tmp/stolen"})
    yield api.get(f"{url}/filesystem//tmp/stolen/f")


def assert_host_untouched(host_dir: Path) -> None:
    assert sorted(p.name for p in host_dir.iterdir()) == ["f", "secret.py"]
    assert (host_dir / "f").read_text() == SECRET + "\n"


def test_dotdot_and_encoded_paths(api, box, host_dir):  # type: ignore[no-untyped-def]
    # httpx removes literal '..' segments itself, so send them encoded: the server decodes
    # %2E%2E and %2F before routing, which is exactly the attack.
    host = str(host_dir).lstrip("/")
    for path in (
        "%2E%2E/" * 12 + host,
        "..%2F" * 12 + host.replace("/", "%2F"),
        "%2F%2E%2E" * 12 + "%2F" + host,
        "/./" + "%2E%2E/" * 12 + host,
    ):
        for r in every_reader(api, box, path):
            no_secret(r)
        no_secret(api.put(f"{box}/filesystem/{path}/f", json={"content": "pwned"}))
        no_secret(api.put(f"{box}/filesystem/{path}/new", files={"file": b"pwned"}))
        no_secret(api.put(f"{box}/filesystem/tree/{path}", json={"files": {"new": "pwned"}}))
        no_secret(api.delete(f"{box}/filesystem/{path}/f"))
        no_secret(api.delete(f"{box}/filesystem/tree/{path}"))
    assert_host_untouched(host_dir)


def test_absolute_and_relative_symlink_chains(api, box, host_dir):  # type: ignore[no-untyped-def]
    rel = "../" * 12 + str(host_dir).lstrip("/")
    sh(
        api,
        box,
        f"mkdir -p /l/x/y; ln -s {host_dir} /l/abs; ln -s {rel} /l/rel; "
        "ln -s ../rel /l/x/hop; ln -s x/hop /l/chain; ln -s /l/abs/f /l/file",
    )
    for link in ("/l/abs", "/l/rel", "/l/chain", "/l/x/hop"):
        for r in every_reader(api, box, link):
            no_secret(r)
        no_secret(api.put(f"{box}/filesystem/{link}/f", json={"content": "pwned"}))
        no_secret(api.put(f"{box}/filesystem/{link}/g", files={"file": b"pwned"}))
        no_secret(api.put(f"{box}/filesystem/tree/{link}", json={"files": {"g": "pwned"}}))
        no_secret(
            api.post(
                f"{box}/filesystem-copy",
                json={"source": "/etc/hostname", "destination": f"{link}/f"},
            )
        )
        init = api.post(f"{box}/filesystem-multipart/initiate/{link}/f").json()
        api.put(
            f"{box}/filesystem-multipart/{init['uploadId']}/part?partNumber=1",
            files={"file": b"pwned"},
        )
        no_secret(api.post(f"{box}/filesystem-multipart/{init['uploadId']}/complete", json={}))
        no_secret(api.delete(f"{box}/filesystem/{link}/f"))
    no_secret(api.get(f"{box}/filesystem//l/file"))
    no_secret(api.put(f"{box}/filesystem//l/file", json={"content": "pwned"}))
    no_secret(api.delete(f"{box}/filesystem//l/abs?recursive=true"))  # removes the link only
    assert_host_untouched(host_dir)


def test_symlink_swap_during_operations(api, box, host_dir):  # type: ignore[no-untyped-def]
    """A sandbox process flips /race/sw between a real directory and a link to the host
    directory as fast as it can while every reader walks through it (TOCTOU)."""
    sh(
        api,
        box,
        f"mkdir -p /race/d && echo {SECRET[:4]}-sandbox > /race/d/f && ln -s {host_dir} /race/l",
    )
    flip = 'while (1) { rename "/race/d", "/race/sw"; rename "/race/sw", "/race/d"; rename "/race/l", "/race/sw"; rename "/race/sw", "/race/l" }'
    sh(api, box, f"timeout 30 perl -e '{flip}' >/dev/null 2>&1", wait=False)
    deadline = time.monotonic() + 8
    rounds = 0
    while time.monotonic() < deadline:
        for path in ("/race", "/race/sw"):
            for r in every_reader(api, box, path):
                no_secret(r)
        rounds += 1
    assert rounds > 3
    assert_host_untouched(host_dir)


def test_hard_links_cannot_reach_host_files(api, box, host_dir):  # type: ignore[no-untyped-def]
    out = sh(api, box, f"ln {host_dir}/f /tmp/hl 2>&1; ln /etc/hostname /tmp/hl2 && echo linked")
    assert "linked" in out["stdout"]  # links inside the sandbox work...
    assert api.get(f"{box}/filesystem//tmp/hl").status_code == 404  # ...to host files they cannot
    no_secret(api.get(f"{box}/filesystem//tmp/hl2"))
    no_secret(api.put(f"{box}/filesystem//tmp/hl2", json={"content": "sandbox only"}))
    assert_host_untouched(host_dir)


def test_special_files_never_block(api, box):  # type: ignore[no-untyped-def]
    made = sh(
        api,
        box,
        "mkdir -p /sp && mkfifo /sp/fifo && echo ok > /sp/file; mknod /sp/null c 1 3 && echo dev",
    )
    for path in ("/sp/fifo", "/sp/null") if "dev" in made["stdout"] else ("/sp/fifo",):
        for accept in ("*/*", "application/octet-stream"):
            r = api.get(f"{box}/filesystem/{path}", headers={"Accept": accept}, timeout=10)
            assert r.status_code in (400, 404), r.text
        r = api.put(f"{box}/filesystem/{path}", json={"content": "x"}, timeout=10)
        assert r.status_code in (400, 404), r.text
    for r in every_reader(api, box, "/sp"):
        assert r.status_code < 500, r.text
    tree = api.get(f"{box}/filesystem/tree//sp", params={"content": "true"}, timeout=10).json()
    assert {f["name"]: f.get("content") for f in tree["files"]}["file"] == "ok\n"
    # The host view of the sandbox's /proc and /dev is not the host's own.
    for path in ("/proc/self/environ", "/proc/1/cmdline", "/proc/self/status", "/dev/mem"):
        r = api.get(f"{box}/filesystem/{path}", timeout=10)
        assert r.status_code in (400, 404) and "cove" not in r.text.lower(), (path, r.text[:200])


def test_archive_and_multipart_names_stay_inside(api, box, host_dir):  # type: ignore[no-untyped-def]
    target = "%2E%2E/" * 12 + str(host_dir / "uploaded").lstrip("/")
    init = api.post(f"{box}/filesystem-multipart/initiate/{target}").json()
    assert ".." not in init["path"]
    api.put(
        f"{box}/filesystem-multipart/{init['uploadId']}/part?partNumber=1",
        files={"file": ("../../x", b"data")},
    )
    assert (
        api.post(f"{box}/filesystem-multipart/{init['uploadId']}/complete", json={}).status_code
        == 200
    )
    assert (
        api.get(f"{box}/filesystem/{init['path']}").json()["content"] == "data"
    )  # inside the sandbox
    for bad in ("..", "..%2F..%2Fetc", "%2E%2E"):
        r = api.put(f"{box}/filesystem-multipart/{bad}/part?partNumber=1", files={"file": b"x"})
        assert r.status_code in (404, 405), r.text
    sh(api, box, "mkdir -p '/ar/..dots' && touch '/ar/..dots/...' '/ar/a b'")
    r = api.get(f"{box}/filesystem//ar?download=true")
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        for member in tar.getmembers():
            assert not member.name.startswith("/") and ".." not in member.name.split("/"), (
                member.name
            )
    assert_host_untouched(host_dir)


def test_bounds_on_bodies_depth_and_counts(api, box):  # type: ignore[no-untyped-def]
    huge = api.put(
        f"{box}/filesystem//tmp/h", content=b'{"content":"' + b"x" * (17 * 1024 * 1024) + b'"}'
    )
    assert huge.status_code == 400

    def endless():  # type: ignore[no-untyped-def]
        """Chunked, no Content-Length: 40 MiB (httpx sends it all before reading the reply)."""
        yield b'{"content":"'
        for _ in range(640):
            yield b"x" * 65536

    chunked = api.put(f"{box}/filesystem//tmp/h", content=endless())
    assert chunked.status_code == 400 and "larger" in chunked.json()["error"]
    sh(api, box, "mkdir -p /big && head -c 5000000 /dev/zero > /big/a && echo hi > /big/b")
    r = api.get(f"{box}/filesystem/tree//big", params={"content": "true", "maxBytes": "1000000"})
    assert r.status_code == 422 and "maxBytes" in r.json()["error"]
    sh(api, box, "d=/deep; for i in $(seq 300); do d=$d/d; done; mkdir -p $d && echo bottom > $d/f")
    for r in (
        api.get(f"{box}/filesystem/tree//deep", params={"content": "true"}),
        api.get(f"{box}/filesystem-find//deep"),
        api.get(f"{box}/filesystem-search//deep", params={"query": "f"}),
        api.get(f"{box}/filesystem//deep?download=true"),
        api.post(f"{box}/filesystem-copy", json={"source": "/deep", "destination": "/deep2"}),
    ):
        assert r.status_code in (200, 400), r.text[:200]
    assert api.delete(f"{box}/filesystem//deep?recursive=true").status_code == 200
    sh(api, box, "mkdir -p /many && cd /many && seq 3000 | xargs touch")
    r = api.get(f"{box}/filesystem/tree//many", params={"maxFiles": "100"})
    assert r.status_code == 422 and "maxFiles" in r.json()["error"]
    r = api.get(f"{box}/filesystem-find//many", params={"maxResults": "10"})
    assert r.json()["total"] == 10


@pytest.fixture
def small_disk():  # type: ignore[no-untyped-def]
    """A server whose sandboxes get a 64 MiB disk."""
    with own_server(COVE_DISK_MB="64") as srv:
        yield srv


def test_uploads_count_against_the_sandbox_disk(small_disk):  # type: ignore[no-untyped-def]
    with small_disk.client("ws-a") as api:
        r = api.post(
            "/v0/sandboxes",
            json={"metadata": {"name": "small"}, "spec": {"runtime": {"memory": 512}}},
        )
        box = r.json()["metadata"]["url"]
        big = b"\0" * (80 * 1024 * 1024)
        full = api.put(f"{box}/filesystem//tmp/full", files={"file": big}, timeout=120)
        assert full.status_code == 507, full.text
        assert api.get(f"{box}/filesystem//tmp/full").status_code == 404  # nothing half-written
        assert (
            api.put(
                f"{box}/filesystem//tmp/j", json={"content": "x" * (15 * 1024 * 1024)}
            ).status_code
            == 200
        )
        up = api.post(f"{box}/filesystem-multipart/initiate//tmp/m").json()["uploadId"]
        codes = [
            api.put(
                f"{box}/filesystem-multipart/{up}/part?partNumber={n}",
                files={"file": big[: 20 << 20]},
            ).status_code
            for n in range(1, 5)
        ]
        assert 507 in codes  # parts live on the sandbox's disk, not the host's
        assert api.delete(f"{box}/filesystem-multipart/{up}/abort").status_code == 200
        # Space is back: the spool was removed.
        assert (
            api.put(f"{box}/filesystem//tmp/after", files={"file": big[: 30 << 20]}).status_code
            == 200
        )
        api.delete("/v0/sandboxes/small")

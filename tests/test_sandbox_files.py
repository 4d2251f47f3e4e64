"""The sandbox filesystem API through the official SDK (raw HTTP where it has no call)."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile

import httpx
import pytest
from blaxel.core.sandbox.types import ResponseError
from conftest import unique


@pytest.fixture
def sb(sdk):  # type: ignore[no-untyped-def]
    box = sdk.SyncSandboxInstance.create({"name": unique("fs"), "memory": 512})
    yield box
    sdk.SyncSandboxInstance.delete(box.metadata.name)


@pytest.fixture
def url(sb):  # type: ignore[no-untyped-def]
    return sb.metadata.url


def sh(sb, command: str) -> str:  # type: ignore[no-untyped-def]
    result = sb.process.exec({"command": command, "wait_for_completion": True})
    assert result.exit_code == 0, result.logs
    return result.stdout


def run_async(sdk, sb, fn):  # type: ignore[no-untyped-def]
    """Run `fn(async_sandbox)`: fs.find / fs.grep / fs.watch exist only on the async SDK."""

    async def main():  # type: ignore[no-untyped-def]
        box = await sdk.SandboxInstance.get(sb.metadata.name)
        return await fn(box)

    return asyncio.run(main())


def test_write_read_ls_rm(sb):  # type: ignore[no-untyped-def]
    sb.fs.write("/tmp/a/b/hello.txt", "héllo")
    assert sb.fs.read("/tmp/a/b/hello.txt") == "héllo"
    assert sh(sb, "cat /tmp/a/b/hello.txt") == "héllo"
    listing = sb.fs.ls("/tmp/a")
    assert [d.name for d in listing.subdirectories] == ["b"]
    files = sb.fs.ls("/tmp/a/b").files
    assert [(f.name, f.size, f.permissions) for f in files] == [("hello.txt", 6, "644")]
    sb.fs.mkdir("/tmp/a/empty", "0700")
    assert sh(sb, "stat -c %a /tmp/a/empty") == "700\n"
    with pytest.raises(ResponseError) as not_empty:
        sb.fs.rm("/tmp/a")  # not empty without recursive
    assert not_empty.value.status == 409
    sb.fs.rm("/tmp/a", recursive=True)
    assert sh(sb, "ls /tmp").count("a\n") == 0
    with pytest.raises(ResponseError) as missing:
        sb.fs.read("/tmp/a/b/hello.txt")
    assert missing.value.status == 404


def test_binary_roundtrip_and_permissions(sb, api, url):  # type: ignore[no-untyped-def]
    blob = bytes(range(256)) * 100
    sb.fs.write_binary("/tmp/b.bin", blob)
    assert sb.fs.read_binary("/tmp/b.bin") == blob
    r = api.put(
        url + "/filesystem//tmp/x.sh",
        files={"file": ("x", b"#!/bin/sh\necho ran\n")},
        data={"permissions": "0750"},
    )
    assert r.status_code == 200, r.text
    assert sh(sb, "stat -c %a /tmp/x.sh; /tmp/x.sh") == "750\nran\n"


def test_json_and_raw_by_accept_and_wire_paths(sb, api, url):  # type: ignore[no-untyped-def]
    sb.fs.write("/tmp/w.txt", "wire")
    for path in ("/filesystem//tmp/w.txt", "/filesystem/tmp/w.txt", "/filesystem/%2Ftmp%2Fw.txt"):
        r = api.get(url + path, headers={"Accept": "*/*"})
        assert r.status_code == 200, path
        body = r.json()
        assert (
            body["content"] == "wire" and body["path"] == "/tmp/w.txt" and body["name"] == "w.txt"
        )
        assert set(body) >= {"size", "permissions", "owner", "group", "lastModified"}
    raw = api.get(url + "/filesystem//tmp/w.txt", headers={"Accept": "application/octet-stream"})
    assert raw.content == b"wire" and raw.headers["content-type"] == "application/octet-stream"
    assert api.get(url + "/filesystem//tmp/w.txt?download=true").content == b"wire"
    head = api.head(url + "/filesystem//tmp/w.txt")
    assert head.status_code == 200 and head.headers["x-file-size"] == "4"
    assert api.head(url + "/filesystem//tmp/none").status_code == 404
    missing = api.get(url + "/filesystem//tmp/none")
    assert missing.status_code == 404 and "error" in missing.json()


def test_same_handlers_under_v1(sb, api):  # type: ignore[no-untyped-def]
    base = f"/v1/sandboxes/{sb.metadata.name}"
    assert api.put(base + "/filesystem//tmp/v1.txt", json={"content": "v1"}).status_code == 200
    assert api.get(base + "/filesystem/tmp/v1.txt").json()["content"] == "v1"
    tree = api.get(base + "/filesystem/tree//tmp").json()
    assert "/tmp/v1.txt" in [f["path"] for f in tree["files"]]
    found = api.get(base + "/filesystem/find", params={"path": "/tmp", "patterns": "*.txt"}).json()
    assert [m["path"] for m in found["matches"]] == ["/tmp/v1.txt"]
    hits = api.get(base + "/filesystem/search", params={"path": "/tmp", "query": "v1"}).json()
    assert [(m["path"], m["line"]) for m in hits["matches"]] == [("/tmp/v1.txt", 1)]


def test_bad_input_is_4xx_in_sandbox_shape(sb, api, url):  # type: ignore[no-untyped-def]
    cases = [
        api.put(url + "/filesystem//tmp/p", json={"content": "x", "permissions": "rwx"}),
        api.put(url + "/filesystem//tmp/p", content=b"not json"),
        api.put(url + "/filesystem//tmp/p", json={"content": 5}),
        api.get(url + "/filesystem-find//tmp", params={"type": "socket"}),
        api.get(url + "/filesystem-find//tmp", params={"maxResults": "-1"}),
        api.get(url + "/filesystem-content-search//tmp"),
        api.put(url + "/filesystem-multipart/nope/part?partNumber=1", files={"file": b"x"}),
        api.put(url + "/filesystem//tmp/m", files={"other": b"x"}),
        api.delete(url + "/filesystem//"),
    ]
    for r in cases:
        assert 400 <= r.status_code < 500, (r.request.url, r.status_code, r.text)
        assert isinstance(r.json()["error"], str)


def test_tree_write_read_delete(sb, api, url):  # type: ignore[no-untyped-def]
    listing = sb.fs.write_tree(
        [{"path": "a/b.txt", "content": "B"}, {"path": "c.txt", "content": "C"}], "/tmp/tree"
    )
    assert [f.name for f in listing.files] == ["c.txt"]
    tree = sb.fs.read_tree("/tmp/tree")
    contents = {f.path: f.content for f in tree.files}
    assert contents == {"/tmp/tree/a/b.txt": "B", "/tmp/tree/c.txt": "C"}
    assert [d.path for d in tree.subdirectories] == ["/tmp/tree/a"]
    only = sb.fs.read_tree("/tmp/tree", patterns=["b.*"])
    assert [f.path for f in only.files] == ["/tmp/tree/a/b.txt"]
    too_many = api.get(
        url + "/filesystem/tree//tmp/tree", params={"recursive": "true", "maxFiles": 1}
    )
    assert too_many.status_code == 422
    bad = api.put(url + "/filesystem/tree//tmp/tree", json={"files": {"../../x": "y"}})
    assert bad.status_code == 400
    assert api.delete(url + "/filesystem/tree//tmp/tree").status_code == 200
    assert api.get(url + "/filesystem//tmp/tree").status_code == 404


def test_copy_and_no_overwrite(sb):  # type: ignore[no-untyped-def]
    sb.fs.write_tree([{"path": "d/x.txt", "content": "X"}], "/tmp/src")
    sh(sb, "ln -s d/x.txt /tmp/src/link")
    sb.fs.cp("/tmp/src", "/tmp/dst", no_overwrite=True)
    assert sb.fs.read("/tmp/dst/d/x.txt") == "X"
    assert sh(sb, "readlink /tmp/dst/link") == "d/x.txt\n"
    with pytest.raises(FileExistsError):
        sb.fs.cp("/tmp/src", "/tmp/dst", no_overwrite=True)
    sb.fs.write("/tmp/src/d/x.txt", "X2")
    sb.fs.cp("/tmp/src", "/tmp/dst")  # the SDK's default: cp -r through a process
    sb.fs.write("/tmp/one.txt", "1")
    sb.fs.cp("/tmp/one.txt", "/tmp/two.txt", no_overwrite=True)
    assert sb.fs.read("/tmp/two.txt") == "1"


def test_large_write_goes_multipart(sb, api, url):  # type: ignore[no-untyped-def]
    text = "0123456789abcdef" * (11 * 1024 * 1024 // 16)  # 11 MiB: three parts
    sb.fs.write("/tmp/big.txt", text)
    assert sh(sb, "wc -c < /tmp/big.txt") == f"{len(text)}\n"
    assert sb.fs.read_binary("/tmp/big.txt") == text.encode()
    assert api.get(url + "/filesystem-multipart").json()["uploads"] == []
    assert sh(sb, "ls -A /tmp/.cove-multipart") == ""  # parts cleaned up


def test_multipart_by_hand(sb, api, url):  # type: ignore[no-untyped-def]
    init = api.post(
        url + "/filesystem-multipart/initiate//tmp/up.bin", json={"permissions": "0600"}
    )
    upload_id = init.json()["uploadId"]
    assert init.json()["path"] == "/tmp/up.bin"
    etags = {}
    for n, chunk in ((2, b"world"), (1, b"hello ")):
        r = api.put(
            url + f"/filesystem-multipart/{upload_id}/part?partNumber={n}",
            files={"file": ("part", chunk)},
        )
        assert r.json()["partNumber"] == n and r.json()["size"] == len(chunk)
        etags[n] = r.json()["etag"]
    parts = api.get(url + f"/filesystem-multipart/{upload_id}/parts").json()["parts"]
    assert [p["partNumber"] for p in parts] == [1, 2]
    listed = api.get(url + "/filesystem-multipart").json()["uploads"]
    assert [u["uploadId"] for u in listed] == [upload_id]
    bad = api.post(
        url + f"/filesystem-multipart/{upload_id}/complete",
        json={"parts": [{"partNumber": 1, "etag": "nope"}]},
    )
    assert bad.status_code == 400
    body = {"parts": [{"partNumber": n, "etag": e} for n, e in sorted(etags.items())]}
    assert (
        api.post(url + f"/filesystem-multipart/{upload_id}/complete", json=body).status_code == 200
    )
    assert sh(sb, "cat /tmp/up.bin; stat -c ' %a' /tmp/up.bin") == "hello world 600\n"
    assert api.get(url + f"/filesystem-multipart/{upload_id}/parts").status_code == 404
    other = api.post(url + "/filesystem-multipart/initiate//tmp/ab.bin").json()["uploadId"]
    api.put(url + f"/filesystem-multipart/{other}/part?partNumber=1", files={"file": b"x"})
    assert api.delete(url + f"/filesystem-multipart/{other}/abort").status_code == 200
    assert api.get(url + "/filesystem//tmp/ab.bin").status_code == 404
    assert sh(sb, "ls -A /tmp/.cove-multipart") == ""


def test_find(sdk, sb):  # type: ignore[no-untyped-def]
    sb.fs.write_tree(
        [
            {"path": "src/a.py", "content": ""},
            {"path": "src/b.js", "content": ""},
            {"path": "node_modules/m.py", "content": ""},
            {"path": ".hidden/h.py", "content": ""},
            {"path": "build/c.py", "content": ""},
        ],
        "/app",
    )

    async def go(box):  # type: ignore[no-untyped-def]
        py = await box.fs.find("/app", type="file", patterns=["*.py"])
        dirs = await box.fs.find("/app", type="directory")
        limited = await box.fs.find("/app", type="file", max_results=1)
        excluded = await box.fs.find("/app", patterns=["*.py"], exclude_dirs=["build"])
        hidden = await box.fs.find("/app", patterns=["*.py"], exclude_hidden=False)
        return py, dirs, limited, excluded, hidden

    py, dirs, limited, excluded, hidden = run_async(sdk, sb, go)
    assert sorted(m.path for m in py.matches) == ["/app/build/c.py", "/app/src/a.py"]
    assert {m.type_ for m in py.matches} == {"file"}
    assert sorted(m.path for m in dirs.matches) == ["/app/build", "/app/src"]
    assert limited.total == 1
    # Naming excludeDirs replaces the default list (node_modules), as for grep.
    assert sorted(m.path for m in excluded.matches) == ["/app/node_modules/m.py", "/app/src/a.py"]
    assert "/app/.hidden/h.py" in [m.path for m in hidden.matches]


def test_grep(sdk, sb):  # type: ignore[no-untyped-def]
    sb.fs.write_tree(
        [
            {"path": "x.py", "content": "one\ntwo\n  # TODO fix\nfour\nfive\n"},
            {"path": "y.txt", "content": "todo later\n"},
            {"path": "node_modules/z.py", "content": "TODO hidden\n"},
        ],
        "/app",
    )

    async def go(box):  # type: ignore[no-untyped-def]
        exact = await box.fs.grep(
            "TODO", "/app", case_sensitive=True, context_lines=1, file_pattern="*.py"
        )
        loose = await box.fs.grep("todo", "/app")
        capped = await box.fs.grep("o", "/app", max_results=2)
        return exact, loose, capped

    exact, loose, capped = run_async(sdk, sb, go)
    assert [(m.path, m.line, m.column, m.text) for m in exact.matches] == [
        ("/app/x.py", 3, 5, "  # TODO fix")
    ]
    assert exact.matches[0].context == "two\nfour"
    assert sorted(m.path for m in loose.matches) == ["/app/x.py", "/app/y.txt"]
    assert capped.total == 2 and exact.query == "TODO"


def test_fuzzy_search(sb, api, url):  # type: ignore[no-untyped-def]
    sb.fs.write_tree(
        [
            {"path": "src/components/Button.tsx", "content": ""},
            {"path": "README.md", "content": ""},
        ],
        "/proj",
    )
    r = api.get(url + "/filesystem-search//proj", params={"query": "button"})
    best = r.json()["matches"][0]
    assert (
        best["path"] == "/proj/src/components/Button.tsx"
        and best["type"] == "file"
        and best["score"] > 0
    )
    none = api.get(url + "/filesystem-search//proj", params={"query": "zzzz"}).json()
    assert none == {"matches": [], "total": 0}


def test_watch_sees_changes_made_inside_the_sandbox(sdk, sb):  # type: ignore[no-untyped-def]
    sh(sb, "mkdir -p /w/sub")

    async def go(box):  # type: ignore[no-untyped-def]
        flat, deep = [], []

        async def on_flat(e):  # type: ignore[no-untyped-def]
            flat.append((e.op, e.path, e.name))

        async def on_deep(e):  # type: ignore[no-untyped-def]
            deep.append((e.op, e.path, e.name))

        h1 = box.fs.watch("/w", on_flat, {"ignore": ["skip"]})
        h2 = box.fs.watch("/w/**", on_deep)
        await asyncio.sleep(0.5)
        await box.process.exec(
            {
                "command": "echo a > /w/f; echo s > /w/skip.txt; echo b > /w/sub/g; mkdir /w/new; echo c > /w/new/h; chmod 600 /w/f; rm /w/f",
                "wait_for_completion": True,
            }
        )
        for _ in range(100):
            if ("REMOVE", "/w", "f") in flat and ("CREATE", "/w/new", "h") in deep:
                break
            await asyncio.sleep(0.05)
        h1.close()
        h2.close()
        return flat, deep

    flat, deep = run_async(sdk, sb, go)
    for op in ("CREATE", "WRITE", "CHMOD", "REMOVE"):
        assert (op, "/w", "f") in flat
    assert not any(name == "skip.txt" for _, _, name in flat)
    assert not any(path == "/w/sub" for _, path, _ in flat)  # not recursive
    assert ("CREATE", "/w/sub", "g") in deep and ("CREATE", "/w/new", "h") in deep


def test_watch_with_content_and_end_of_stream(sb, api, url):  # type: ignore[no-untyped-def]
    sh(sb, "mkdir -p /w2")
    with api.stream("GET", url + "/watch/filesystem//w2?withContent=true") as r:
        assert r.status_code == 200
        sb.fs.write("/w2/f.txt", "payload")
        lines = r.iter_lines()
        event = json.loads(next(line for line in lines if line.strip()))
        assert event["op"] == "CREATE" and event["name"] == "f.txt" and event["path"] == "/w2"
        sh(sb, "rm -rf /w2")
        rest = list(lines)  # the stream ends once the directory is gone
    assert any('"REMOVE"' in line for line in rest)
    assert api.get(url + "/watch/filesystem//nope").status_code == 404


def test_directory_download_as_tar_gz(sb, api, url):  # type: ignore[no-untyped-def]
    sb.fs.write_tree(
        [{"path": "a/one.txt", "content": "1"}, {"path": "two.txt", "content": "22"}], "/exp"
    )
    sh(sb, "ln -s /etc/passwd /exp/link; mkfifo /exp/fifo")
    r = api.get(url + "/filesystem//exp?download=true")
    assert r.status_code == 200 and r.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        names = {m.name: m for m in tar.getmembers()}
        assert set(names) == {"exp/a", "exp/a/one.txt", "exp/two.txt", "exp/link"}
        assert tar.extractfile("exp/two.txt").read() == b"22"  # type: ignore[union-attr]
        assert names["exp/link"].issym() and names["exp/link"].linkname == "/etc/passwd"


def test_large_raw_read_streams(sb, api, url):  # type: ignore[no-untyped-def]
    sh(sb, "head -c 20000000 /dev/urandom > /tmp/r.bin; sha256sum /tmp/r.bin > /tmp/r.sum")
    want = sh(sb, "cat /tmp/r.sum").split()[0]
    import hashlib

    digest = hashlib.sha256()
    with api.stream(
        "GET", url + "/filesystem//tmp/r.bin", headers={"Accept": "application/octet-stream"}
    ) as r:
        assert r.headers["content-length"] == "20000000"
        for chunk in r.iter_bytes():
            digest.update(chunk)
    assert digest.hexdigest() == want
    json_read = api.get(url + "/filesystem//tmp/r.bin")
    assert json_read.status_code == 200  # 20 MB is under the inline JSON limit


def test_other_sandboxes_keep_working_while_a_client_stalls(sb, sdk, server):  # type: ignore[no-untyped-def]
    sh(sb, "head -c 200000000 /dev/zero > /tmp/huge")
    from server import KEYS

    headers = {"Authorization": f"Bearer {KEYS['ws-a']}", "Accept": "application/octet-stream"}
    stalled = httpx.Client(timeout=30, headers=headers)
    with stalled.stream("GET", sb.metadata.url + "/filesystem//tmp/huge") as r:
        next(r.iter_raw(65536))  # read a little, then stop pulling
        other = sdk.SyncSandboxInstance.create({"name": unique("fs2"), "memory": 512})
        try:
            other.fs.write("/tmp/x", "fine")
            assert other.fs.read("/tmp/x") == "fine"
        finally:
            sdk.SyncSandboxInstance.delete(other.metadata.name)
    stalled.close()

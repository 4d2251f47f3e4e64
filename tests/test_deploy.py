"""POST /v1/sandboxes/{name}/deploy (seed 000 "Deploy to Sandbox", issue 7): runtimes, tarballs,
failures with their log, supervision, redeploys, bad input and every error code."""

from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import new_data_dir, own_server, unique
from registry import registry_mirrors
from server import COVE, CoveServer, leftovers

DEPLOY_WAIT_S = 240  # a build on this busy 2-core host; the loop ends as soon as it is done

NODE_APP = """
const http = require('http');
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify({ status: 'ok', time: new Date().toISOString() }));
});
server.listen(3000, () => console.log('Listening on :3000'));
"""

PY_APP = """
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("%s from python on %s" % ({word!r}, os.environ["PORT"])).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

print("serving", flush=True)
HTTPServer(("0.0.0.0", int(os.environ["PORT"])), Hello).serve_forever()
"""


def py_app(word: str) -> str:
    return PY_APP.replace("{word!r}", repr(word))


def create(api, port: int | None = 3000, tier: str = "xs") -> str:  # type: ignore[no-untyped-def]
    name = unique("dep")
    body: dict = {"name": name, "tier": tier, "ttl": "30m"}
    if port is not None:
        body["port"] = port
    r = api.post("/v1/sandboxes", json=body)
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 60
    while r.json()["status"] != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
        r = api.get(f"/v1/sandboxes/{name}")
    assert r.json()["status"] == "running", r.text
    return name


def deployed(api, name: str) -> dict:  # type: ignore[no-untyped-def]
    """The sandbox once its deploy has ended (running with a url, or failed)."""
    deadline = time.monotonic() + DEPLOY_WAIT_S
    body = api.get(f"/v1/sandboxes/{name}").json()
    while body["status"] == "building" and time.monotonic() < deadline:
        time.sleep(0.2)
        body = api.get(f"/v1/sandboxes/{name}").json()
    assert body["status"] != "building", "the deploy did not end"
    return body


def deploy_ok(api, name: str, **body) -> dict:  # type: ignore[no-untyped-def]
    r = api.post(f"/v1/sandboxes/{name}/deploy", json=body)
    assert r.status_code == 202, r.text
    done = deployed(api, name)
    assert done["status"] == "running" and done["url"], done
    return done


def fetch(url: str, path: str = "/") -> httpx.Response:
    return httpx.get(url.rstrip("/") + path, timeout=30)


def tarball(members: dict[str, bytes | tuple[str, str]], top: str = "") -> bytes:
    """name → content (a file) or (kind, target) for "sym"/"hard" links."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(top + name)
            if isinstance(content, tuple):
                kind, info.linkname = content
                info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def gz_post(api, name: str, data: bytes, **params: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    headers = {"Content-Type": "application/gzip"}
    return api.post(f"/v1/sandboxes/{name}/deploy", content=data, headers=headers, params=params)


# -- seed 000 -----------------------------------------------------------------------------------


def test_seed_complete_example(api):  # type: ignore[no-untyped-def]
    """Create (s, port 3000) → deploy the Node app → poll → preview {port: 3000} → its JSON."""
    name = unique("my-api")
    r = api.post("/v1/sandboxes", json={"name": name, "tier": "s", "ttl": "2h", "port": 3000})
    assert r.status_code == 201, r.text
    current = r.json()
    deadline = time.monotonic() + 60
    while current["status"] != "running" and time.monotonic() < deadline:
        current = api.get(f"/v1/sandboxes/{name}").json()
    files = {
        "index.js": NODE_APP,
        "package.json": '{"name":"my-api","scripts":{"start":"node index.js"}}',
    }
    r = api.post(f"/v1/sandboxes/{name}/deploy", json={"files": files, "runtime": "node"})
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["status"] == "building" and accepted["url"] is None
    assert accepted["name"] == name and accepted["id"] == current["id"]
    assert accepted["source"] == "sandbox" and accepted["tier"] == "s" and accepted["createdAt"]

    done = deployed(api, name)
    assert done["status"] == "running" and done["url"], done
    live = fetch(done["url"])
    assert live.status_code == 200 and live.json()["status"] == "ok", live.text

    r = api.post(f"/v1/sandboxes/{name}/previews", json={"port": 3000})
    assert r.status_code == 201, r.text
    preview = r.json()
    answer = fetch(preview["url"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "ok" and answer.json()["time"].endswith("Z")
    app = api.get(f"/v1/sandboxes/{name}/process/app").json()
    assert app["status"] == "running" and "Listening on :3000" in app["logs"]
    assert app["keepAlive"] and app["restartOnFailure"]
    assert api.delete(f"/v1/sandboxes/{name}").status_code == 204


# -- runtimes -----------------------------------------------------------------------------------


def test_python_deploy_detected_and_given_its_port(api):  # type: ignore[no-untyped-def]
    name = create(api, port=8080)
    done = deploy_ok(api, name, files={"main.py": py_app("hello")})  # runtime auto-detected
    assert fetch(done["url"]).text == "hello from python on 8080"
    api.delete(f"/v1/sandboxes/{name}")


def test_a_curl_style_body_is_read_as_json(api):  # type: ignore[no-untyped-def]
    """`curl -d '{…}'` labels its JSON application/x-www-form-urlencoded."""
    name = create(api)
    body = json.dumps({"files": {"index.html": "<h1>from curl</h1>"}})
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    r = api.post(f"/v1/sandboxes/{name}/deploy", content=body, headers=headers)
    assert r.status_code == 202, r.text
    done = deployed(api, name)
    assert done["status"] == "running" and "from curl" in fetch(done["url"], "/").text, done
    api.delete(f"/v1/sandboxes/{name}")


def test_static_deploy(api):  # type: ignore[no-untyped-def]
    name = create(api)
    page = "<!doctype html><title>cove</title><h1>static site</h1>"
    files = {"index.html": page, "css/site.css": "h1 { color: teal }"}
    done = deploy_ok(api, name, files=files)
    assert "<h1>static site</h1>" in fetch(done["url"], "/").text
    assert fetch(done["url"], "/css/site.css").text == "h1 { color: teal }"
    api.delete(f"/v1/sandboxes/{name}")


def test_custom_runtime_with_entrypoint_script(api):  # type: ignore[no-untyped-def]
    name = create(api)
    script = '#!/bin/sh\necho custom > /tmp/page.txt\nexec python3 -m http.server "$PORT" -d /tmp\n'
    done = deploy_ok(api, name, files={"start.sh": script}, entrypoint="start.sh")
    assert fetch(done["url"], "/page.txt").text == "custom\n"
    api.delete(f"/v1/sandboxes/{name}")


def test_tarball_deploy_with_links_and_query_params(api):  # type: ignore[no-untyped-def]
    name = create(api)
    data = tarball(
        {
            "server.py": py_app("tarred").encode(),
            "static/a.txt": b"A",
            "static/b.txt": ("sym", "a.txt"),  # a link inside the project is kept (as a copy)
            "static/c.txt": ("hard", "app/static/a.txt"),
        },
        top="app/",  # one top directory holding everything is the project root
    )
    r = gz_post(api, name, data, runtime="python", entrypoint="python3 server.py")
    assert r.status_code == 202 and r.json()["status"] == "building", r.text
    done = deployed(api, name)
    assert done["status"] == "running", done
    assert fetch(done["url"]).text == "tarred from python on 3000"
    listing = api.get(f"/v1/sandboxes/{name}/filesystem/workspace/static").json()
    assert sorted(f["name"] for f in listing["files"]) == ["a.txt", "b.txt", "c.txt"]
    b = api.get(f"/v1/sandboxes/{name}/filesystem/workspace/static/b.txt").json()
    assert b["content"] == "A"
    api.delete(f"/v1/sandboxes/{name}")


# -- failures -----------------------------------------------------------------------------------


def test_python_syntax_error_fails_with_the_log(api):  # type: ignore[no-untyped-def]
    name = create(api)
    r = api.post(f"/v1/sandboxes/{name}/deploy", json={"files": {"main.py": "def broken(:\n"}})
    assert r.status_code == 202, r.text
    done = deployed(api, name)
    assert done["status"] == "failed" and done["url"] is None, done
    assert "SyntaxError" in done["error"] and "log" in done["error"], done["error"]
    assert "python3 main.py" in done["error"]
    # Still a working sandbox: its API answers and it can be deployed to again.
    out = api.post(
        f"/v1/sandboxes/{name}/process", json={"command": "echo up", "waitForCompletion": True}
    )
    assert out.json()["stdout"] == "up\n"
    deploy_ok(api, name, files={"main.py": py_app("fixed")})
    api.delete(f"/v1/sandboxes/{name}")


def test_npm_start_exiting_fails_with_the_log(api):  # type: ignore[no-untyped-def]
    name = create(api)
    pkg = {"name": "bad", "scripts": {"start": "node crash.js"}}
    files = {
        "package.json": json.dumps(pkg),
        "crash.js": "console.error('boom: no db'); process.exit(1)",
    }
    r = api.post(f"/v1/sandboxes/{name}/deploy", json={"files": files})
    assert r.status_code == 202, r.text
    done = deployed(api, name)
    assert done["status"] == "failed", done
    assert "boom: no db" in done["error"] and "exited with code 1" in done["error"], done["error"]
    app = api.get(f"/v1/sandboxes/{name}/process/app").json()
    assert app["restartCount"] == app["maxRestarts"] > 0  # restarted, then given up
    api.delete(f"/v1/sandboxes/{name}")


def test_failing_build_step(api):  # type: ignore[no-untyped-def]
    name = create(api)
    pkg = {
        "scripts": {
            "build": "echo compiling; echo 'error TS2322: nope' >&2; exit 2",
            "start": "node x.js",
        }
    }
    r = api.post(f"/v1/sandboxes/{name}/deploy", json={"files": {"package.json": json.dumps(pkg)}})
    assert r.status_code == 202, r.text
    done = deployed(api, name)
    assert done["status"] == "failed", done
    assert "npm run build" in done["error"] and "error TS2322: nope" in done["error"], done["error"]
    api.delete(f"/v1/sandboxes/{name}")


# -- supervision and redeploys ------------------------------------------------------------------


def test_crashed_app_is_restarted(api):  # type: ignore[no-untyped-def]
    name = create(api)
    done = deploy_ok(api, name, files={"main.py": py_app("alive")})
    before = api.get(f"/v1/sandboxes/{name}/process/app").json()
    # SIGKILL to the app's whole process group, from inside the sandbox: a crash.
    kill = f"python3 -c 'import os; os.killpg({before['pid']}, 9)'"
    r = api.post(f"/v1/sandboxes/{name}/process", json={"command": kill, "waitForCompletion": True})
    assert r.json()["exitCode"] == 0, r.text
    deadline = time.monotonic() + 60
    after = before
    while time.monotonic() < deadline:
        after = api.get(f"/v1/sandboxes/{name}/process/app").json()
        if after["restartCount"] >= 1 and after["status"] == "running":
            try:
                if fetch(done["url"]).text == "alive from python on 3000":
                    break
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    assert after["restartCount"] == 1 and after["pid"] != before["pid"], after
    assert fetch(done["url"]).text == "alive from python on 3000"
    assert api.get(f"/v1/sandboxes/{name}").json()["status"] == "running"
    api.delete(f"/v1/sandboxes/{name}")


def test_app_stopped_through_the_process_api_marks_the_deploy_failed(api):  # type: ignore[no-untyped-def]
    name = create(api)
    deploy_ok(api, name, files={"main.py": py_app("x")})
    assert api.delete(f"/v1/sandboxes/{name}/process/app").status_code == 200
    deadline = time.monotonic() + 30
    body = api.get(f"/v1/sandboxes/{name}").json()
    while body["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
        body = api.get(f"/v1/sandboxes/{name}").json()
    assert body["status"] == "failed" and "stopped through the process API" in body["error"]
    api.delete(f"/v1/sandboxes/{name}")


def test_redeploy_replaces_the_app_and_its_files(api):  # type: ignore[no-untyped-def]
    name = create(api)
    first = deploy_ok(api, name, files={"index.html": "version one", "old.txt": "old"})
    assert fetch(first["url"]).text == "version one"
    app1 = api.get(f"/v1/sandboxes/{name}/process/app").json()
    second = deploy_ok(api, name, files={"main.py": py_app("version two")})
    assert fetch(second["url"]).text == "version two from python on 3000"
    assert second["url"] == first["url"]
    old = api.get(f"/v1/sandboxes/{name}/process/{app1['pid']}").json()
    assert old["status"] == "stopped"
    assert api.get(f"/v1/sandboxes/{name}/filesystem/workspace/old.txt").status_code == 404
    running = [
        p for p in api.get(f"/v1/sandboxes/{name}/process").json() if p["status"] == "running"
    ]
    assert [p["name"] for p in running] == ["app"]
    previews = api.get(f"/v1/sandboxes/{name}/previews").json()["previews"]
    assert [p["name"] for p in previews] == ["app-3000"]
    api.delete(f"/v1/sandboxes/{name}")


def test_409_while_a_deploy_is_in_progress_and_delete_during_a_build(api):  # type: ignore[no-untyped-def]
    name = create(api)
    pkg = {"scripts": {"build": "sleep 600", "start": "node index.js"}}
    files = {"package.json": json.dumps(pkg), "index.js": NODE_APP}
    assert api.post(f"/v1/sandboxes/{name}/deploy", json={"files": files}).status_code == 202
    again = api.post(f"/v1/sandboxes/{name}/deploy", json={"files": {"index.html": "x"}})
    assert again.status_code == 409, again.text
    assert again.json()["error"] == "not_deployable" and "in progress" in again.json()["message"]
    assert api.get(f"/v1/sandboxes/{name}").json()["status"] == "building"
    deadline = time.monotonic() + 60
    build = api.get(f"/v1/sandboxes/{name}/process/deploy-build")
    while build.status_code == 404 and time.monotonic() < deadline:  # files are being written
        time.sleep(0.05)
        build = api.get(f"/v1/sandboxes/{name}/process/deploy-build")
    build = build.json()
    assert build["status"] == "running" and build["command"] == "npm run build"
    assert api.delete(f"/v1/sandboxes/{name}").status_code == 204
    late = api.post(f"/v1/sandboxes/{name}/deploy", json={"files": {"index.html": "x"}})
    assert late.status_code in (409, 410), late.text  # deleting, then deleted
    deadline = time.monotonic() + 30
    while api.get(f"/v1/sandboxes/{name}").status_code != 410 and time.monotonic() < deadline:
        time.sleep(0.05)
    gone = api.post(f"/v1/sandboxes/{name}/deploy", json={"files": {"index.html": "x"}})
    assert gone.status_code == 410, gone.text


# -- bad input ----------------------------------------------------------------------------------

BAD_JSON = [
    ({}, "files"),
    ({"files": {}}, "files"),
    ({"files": []}, "files"),
    ({"files": {"a.py": 1}}, "must be a string"),
    ({"files": {"../escape.py": "x"}}, "inside the project"),
    ({"files": {"/etc/cron.d/x": "x"}}, "inside the project"),
    ({"files": {"a/../../x.py": "x"}}, "inside the project"),
    ({"files": {"main.py": "x"}, "runtime": "cobol"}, "runtime"),
    ({"files": {"main.py": "x"}, "entrypoint": 7}, "entrypoint"),
    ({"files": {"README.md": "hi"}}, "cannot detect the runtime"),
    ({"files": {"a.txt": "x"}, "runtime": "custom"}, "entrypoint"),
    ({"files": {"package.json": "{not json"}}, "package.json"),
    ({"files": {"index.js": "x"}, "mode": "fast"}, "unknown field"),
]


@pytest.fixture(scope="module")
def idle(server):  # type: ignore[no-untyped-def]
    """One sandbox that bad requests must leave exactly as it was."""
    with server.client("ws-a") as client:
        name = create(client)
        yield client, name
        client.delete(f"/v1/sandboxes/{name}")


@pytest.mark.parametrize(("body", "says"), BAD_JSON)
def test_bad_json_is_400(idle, body, says):  # type: ignore[no-untyped-def]
    api, name = idle
    r = api.post(f"/v1/sandboxes/{name}/deploy", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request" and says in r.json()["message"], r.text
    after = api.get(f"/v1/sandboxes/{name}").json()
    assert after["status"] == "running" and "/sbx/" in after["url"]  # no deploy happened


BAD_TARBALLS = [
    (tarball({"../evil.py": b"x", "main.py": b"x"}), "outside the project"),
    (tarball({"/etc/passwd": b"x"}), "outside the project"),
    (tarball({"main.py": b"x", "link": ("sym", "/etc/passwd")}), "points outside"),
    (tarball({"main.py": b"x", "d/link": ("sym", "../../../etc/shadow")}), "points outside"),
    (tarball({"main.py": b"x", "hard": ("hard", "../outside")}), "points outside"),
    (tarball({"main.py": b"x", "dangling": ("sym", "nothere")}), "must point to a file"),
    (b"\x1f\x8b not really gzip", "not a readable gzip"),
    (b"", "not a readable gzip"),
]


@pytest.mark.parametrize(("data", "says"), BAD_TARBALLS)
def test_bad_tarballs_are_400(idle, data, says):  # type: ignore[no-untyped-def]
    api, name = idle
    r = gz_post(api, name, data)
    assert r.status_code == 400 and says in r.json()["message"], r.text
    assert api.get(f"/v1/sandboxes/{name}").json()["status"] == "running"


def test_tarball_devices_and_fifos_are_400(idle):  # type: ignore[no-untyped-def]
    api, name = idle
    for kind in (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.addfile(tarfile.TarInfo("main.py"), io.BytesIO(b""))
            dev = tarfile.TarInfo("dev/thing")
            dev.type, dev.devmajor, dev.devminor = kind, 1, 3
            tar.addfile(dev)
        r = gz_post(api, name, buf.getvalue())
        assert r.status_code == 400 and "device or FIFO" in r.json()["message"], r.text


def test_tarball_bad_query_and_content_type_are_400(idle):  # type: ignore[no-untyped-def]
    api, name = idle
    good = tarball({"main.py": b"print(1)"})
    assert gz_post(api, name, good, runtime="cobol").status_code == 400
    r = api.post(
        f"/v1/sandboxes/{name}/deploy", content=b"x", headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 400 and "Content-Type" in r.json()["message"], r.text
    r = api.post(f"/v1/sandboxes/{name}/deploy", content=b"[1,2]")
    assert r.status_code == 400, r.text


# -- error codes --------------------------------------------------------------------------------


def test_unknown_sandbox_is_404_and_other_workspaces_too(api, server):  # type: ignore[no-untyped-def]
    r = api.post("/v1/sandboxes/no-such-box/deploy", json={"files": {"index.html": "x"}})
    assert r.status_code == 404 and r.json()["error"] == "not_found", r.text
    name = create(api)
    with server.client("ws-b") as other:
        r = other.post(f"/v1/sandboxes/{name}/deploy", json={"files": {"index.html": "x"}})
        assert r.status_code == 404, r.text
    r = httpx.post(f"{server.url}/v1/sandboxes/{name}/deploy", json={"files": {"index.html": "x"}})
    assert r.status_code == 401
    api.delete(f"/v1/sandboxes/{name}")


# -- builds: go, and dependencies installed through the egress proxy ----------------------------

GO_APP = """package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "go says hi on %s", os.Getenv("PORT"))
	})
	http.ListenAndServe(":"+os.Getenv("PORT"), nil)
}
"""


def test_go_deploy_is_built_and_run(api):  # type: ignore[no-untyped-def]
    name = create(api)
    files = {"go.mod": "module hello\n\ngo 1.19\n", "main.go": GO_APP}
    r = api.post(f"/v1/sandboxes/{name}/deploy", json={"files": files})
    assert r.status_code == 202, r.text
    done = deployed(api, name)
    assert done["status"] == "running", done
    assert fetch(done["url"]).text == "go says hi on 3000"
    app = api.get(f"/v1/sandboxes/{name}/process/app").json()
    assert app["command"] == "./.cove-app"
    api.delete(f"/v1/sandboxes/{name}")


@pytest.fixture(scope="module")
def registry_api() -> Iterator[httpx.Client]:
    """A server whose sandboxes reach the package registries as this host does (registry.py)."""
    with (
        own_server(COVE_EGRESS_ALLOW_NETS=registry_mirrors()) as srv,
        srv.client("ws-a") as client,
    ):
        yield client


def test_node_dependencies_are_installed(registry_api):  # type: ignore[no-untyped-def]
    api = registry_api
    name = create(api)
    pkg = {
        "name": "deps",
        "dependencies": {"is-number": "7.0.0"},
        "scripts": {"start": "node i.js"},
    }
    app = (
        "const isNumber = require('is-number');"
        "require('http').createServer((q, s) => s.end('is-number: ' + isNumber('42')))"
        ".listen(process.env.PORT);"
    )
    r = api.post(
        f"/v1/sandboxes/{name}/deploy",
        json={"files": {"package.json": json.dumps(pkg), "i.js": app}},
    )
    assert r.status_code == 202, r.text
    done = deployed(api, name)
    assert done["status"] == "running", done.get("error")
    assert fetch(done["url"]).text == "is-number: true"
    api.delete(f"/v1/sandboxes/{name}")


def test_python_requirements_are_installed(registry_api):  # type: ignore[no-untyped-def]
    api = registry_api
    name = create(api)
    main = py_app("six").replace("import os\n", "import os\nimport six\n")
    main = main.replace('"%s from python', 'six.__version__ + " %s from python')
    files = {"requirements.txt": "six==1.16.0\n", "main.py": main}
    r = api.post(f"/v1/sandboxes/{name}/deploy", json={"files": files})
    assert r.status_code == 202, r.text
    done = deployed(api, name)
    assert done["status"] == "running", done.get("error")
    assert fetch(done["url"]).text == "1.16.0 six from python on 3000"
    api.delete(f"/v1/sandboxes/{name}")


def test_missing_dependency_fails_with_the_install_log(registry_api):  # type: ignore[no-untyped-def]
    api = registry_api
    name = create(api)
    files = {"requirements.txt": "no-such-package-cove-test==0.0.1\n", "main.py": py_app("x")}
    r = api.post(f"/v1/sandboxes/{name}/deploy", json={"files": files})
    assert r.status_code == 202, r.text
    done = deployed(api, name)
    assert done["status"] == "failed", done
    assert "pip install" in done["error"] and "no-such-package-cove-test" in done["error"]
    api.delete(f"/v1/sandboxes/{name}")


# -- a restart of cove, and payment --------------------------------------------------------------


def test_kill_9_restart_keeps_running_deploys_and_fails_cut_builds(fresh_server):  # type: ignore[no-untyped-def]
    fresh_server.start()
    with fresh_server.client() as api:
        kept = create(api)
        # Its output pipes die with cove: an app that writes nothing per request (this one)
        # goes on serving; one that logs each request (http.server) breaks on EPIPE.
        first = deploy_ok(api, kept, files={"index.js": NODE_APP}, runtime="node")
        cut = create(api)
        pkg = {"scripts": {"build": "sleep 600", "start": "node index.js"}}
        files = {"package.json": json.dumps(pkg), "index.js": NODE_APP}
        assert api.post(f"/v1/sandboxes/{cut}/deploy", json={"files": files}).status_code == 202
        deadline = time.monotonic() + 60
        while api.get(f"/v1/sandboxes/{cut}/process/deploy-build").status_code == 404:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    fresh_server.stop(signal.SIGKILL)
    fresh_server.start()
    with fresh_server.client() as api:
        body = api.get(f"/v1/sandboxes/{kept}").json()
        assert body["status"] == "running" and body["url"] == first["url"], body
        assert fetch(body["url"]).json()["status"] == "ok"  # the app outlived cove
        failed = api.get(f"/v1/sandboxes/{cut}").json()
        assert failed["status"] == "failed" and "restarted" in failed["error"], failed
        # The unsupervised app of before is replaced by a redeploy like any other.
        again = deploy_ok(api, kept, files={"main.py": py_app("after")})
        assert fetch(again["url"]).text == "after from python on 3000"
        api.delete(f"/v1/sandboxes/{kept}")
        api.delete(f"/v1/sandboxes/{cut}")
    assert fresh_server.stop() == 0
    assert leftovers(fresh_server.data_dir) == []


def test_402_changes_nothing_and_a_deploy_is_charged_nominally() -> None:
    """The balance pays exactly the sandbox (xs × 60 s): the deploy is refused, nothing moves."""
    srv = CoveServer(
        new_data_dir(), COVE_API_KEYS="k-dep:w-dep:0.00138", COVE_BILLING="enforce"
    ).start()
    try:
        with httpx.Client(base_url=srv.url, headers={"Authorization": "Bearer k-dep"}) as api:
            name = unique("pay")
            r = api.post(
                "/v1/sandboxes", json={"name": name, "tier": "xs", "ttl": 60, "port": 3000}
            )
            assert r.status_code == 201, r.text
            deadline = time.monotonic() + 60
            while api.get(f"/v0/sandboxes/{name}").json()["status"] != "DEPLOYED":  # v0: free
                assert time.monotonic() < deadline
                time.sleep(0.05)
            r = api.post(f"/v1/sandboxes/{name}/deploy", json={"files": {"index.html": "x"}})
            assert r.status_code == 402, r.text
            assert r.json()["price"] == "0.00001" and "top-up" in r.json()["action"]
            events = api.get(f"/v0/sandboxes/{name}").json()["events"]
            assert not [e for e in events if e["type"] == "deploy"]
            ls = api.post(
                f"/v1/sandboxes/{name}/process",
                json={"command": "ls /workspace", "waitForCompletion": True},
            )
            assert ls.json()["exitCode"] != 0  # nothing was written
            top_up = subprocess.run(
                [str(COVE), "admin", "top-up", "w-dep", "0.00001"],
                capture_output=True,
                env=srv.env,
                timeout=60,
            )
            assert top_up.returncode == 0, top_up.stderr
            r = api.post(f"/v1/sandboxes/{name}/deploy", json={"files": {"index.html": "x"}})
            assert r.status_code == 202, r.text
            usage = subprocess.run(
                [str(COVE), "admin", "usage", "w-dep"], capture_output=True, env=srv.env, timeout=60
            )
            (account,) = json.loads(usage.stdout)
            assert account["balanceMicros"] == 0  # the sandbox, then exactly one deploy
            assert account["kinds"]["nominal"]["micros"] == -10
    finally:
        assert srv.stop() == 0, srv.log()
        shutil.rmtree(srv.data_dir, ignore_errors=True)

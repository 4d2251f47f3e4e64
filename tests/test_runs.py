"""Ephemeral runs (issue 7, seed 000 "Run Code"): POST /v1/run, GET /v1/runs, GET /v1/runs/{id}.

One server with payment enforced (ws-a is rich, ws-b is the other workspace, ws-c hits the
sandbox limit of 4, ws-d can afford one 30 s run) and the registries' mirror addresses opened,
so package installs reach the real registries through the proxy. The sandboxes trust the
mirror's host-only CA through the egress trust bundle (the host's CAs + cove's).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import own_server, unique
from registry import registry_mirrors
from server import COVE, CoveServer, leftovers

SEED_KEYS = {"id", "status", "language", "stdout", "stderr", "exitCode", "durationMs"}
SEED_KEYS |= {"createdAt", "completedAt"}
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RUN_MICROS_30S = 690  # seed 000 "Run Pricing": xs × 30 s
NOMINAL_MICROS = 10  # seed 000 "Pricing": list, get


@pytest.fixture(scope="module")
def srv() -> Iterator[CoveServer]:
    with own_server(
        COVE_API_KEYS="key-a:ws-a:100.00,key-b:ws-b:1.00,key-c:ws-c:1.00,key-d:ws-d:0.001",
        COVE_BILLING="enforce",
        COVE_MAX_SANDBOXES="4",
        COVE_EGRESS_ALLOW_NETS=registry_mirrors(),
    ) as server:
        yield server


def client(server: CoveServer, workspace: str) -> httpx.Client:
    key = f"key-{workspace[-1]}"
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.Client(base_url=server.url, headers=headers, timeout=900)


@pytest.fixture(scope="module")
def api(srv: CoveServer) -> Iterator[httpx.Client]:
    with client(srv, "ws-a") as c:
        yield c


def run(api: httpx.Client, **body: Any) -> dict[str, Any]:
    r = api.post("/v1/run", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def sandboxes(api: httpx.Client) -> list[dict[str, Any]]:
    r = api.get("/v1/sandboxes")
    assert r.status_code == 200, r.text
    return r.json()["sandboxes"]


def wait_sandbox_gone(api: httpx.Client, name: str, timeout_s: float = 30) -> None:
    """The run's sandbox is deleted when the run ends; its teardown finishes in the background."""
    deadline = time.monotonic() + timeout_s
    while any(s["name"] == name for s in sandboxes(api)):
        assert time.monotonic() < deadline, f"sandbox {name} still listed"
        time.sleep(0.05)


def sandbox_processes(server: CoveServer, word: str) -> list[str]:
    """Processes in this server's sandboxes (in its cgroup tree) whose command has word."""
    from cove.runtime.cgroups import parent_for

    tree = f"/{parent_for(server.data_dir)}/"
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cgroups = (proc / "cgroup").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if tree in cgroups and word in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


def account(server: CoveServer, workspace: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(COVE), "admin", "usage", workspace],
        capture_output=True,
        text=True,
        timeout=60,
        env=server.env,
    )
    assert done.returncode == 0, done.stderr
    (found,) = json.loads(done.stdout)
    return found


def assert_seed_shape(out: dict[str, Any], language: str) -> None:
    assert SEED_KEYS <= set(out) <= SEED_KEYS | {"error"}, out
    assert re.match(r"^run_[0-9a-f]+$", out["id"]), out
    assert out["language"] == language
    assert ISO_MS.match(out["createdAt"]) and ISO_MS.match(out["completedAt"]), out
    assert out["createdAt"] <= out["completedAt"]
    assert isinstance(out["durationMs"], int) and out["durationMs"] >= 0


# -- every language ------------------------------------------------------------------------------

HELLO = {
    "python": ("import math\nprint(f'Pi is {math.pi:.4f}')", "Pi is 3.1416\n"),
    "node": ("console.log([1, 2, 3].map((x) => x * 2).join(','))", "2,4,6\n"),
    "typescript": (
        "interface Point { x: number; y: number }\n"
        "const p: Point = { x: 3, y: 4 };\n"
        "const norm = (q: Point): number => Math.hypot(q.x, q.y);\n"
        "console.log(`norm ${norm(p)}`);\n",
        "norm 5\n",
    ),
    "bash": ('for i in 1 2 3; do printf "%s" "$i"; done; echo " ${BASH_VERSINFO[0]}"', "123 5\n"),
    "ruby": ("puts [1, 2, 3].sum * 7", "42\n"),
    "go": (
        'package main\n\nimport "fmt"\n\nfunc main() { fmt.Printf("go %d\\n", 6*7) }\n',
        "go 42\n",
    ),
}


@pytest.mark.parametrize("language", list(HELLO))
def test_each_language_prints(api: httpx.Client, language: str) -> None:
    code, expected = HELLO[language]
    out = run(api, language=language, code=code, timeout=120)
    assert_seed_shape(out, language)
    assert (out["status"], out["exitCode"], out["stdout"]) == ("completed", 0, expected), out
    assert out["stderr"] == "" and "error" not in out


FILES = {
    "python": (
        {
            "app/main.py": "from util import twice\nprint(twice(21))\n",
            "app/util.py": ("def twice(x):\n    return 2 * x\n"),
        },
        "app/main.py",
    ),
    "node": (
        {
            "src/index.js": "const { twice } = require('./lib');\nconsole.log(twice(21));\n",
            "src/lib.js": "exports.twice = (x) => 2 * x;\n",
        },
        "src/index.js",
    ),
    "typescript": (
        {
            "main.ts": 'import { twice } from "./lib/twice";\nconsole.log(twice(21));\n',
            "lib/twice.ts": "export const twice = (x: number): number => 2 * x;\n",
        },
        "main.ts",
    ),
    "go": (
        {
            "main.go": 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println(twice(21)) }\n',
            "twice.go": "package main\n\nfunc twice(x int) int { return 2 * x }\n",
            "twice_test.go": 'package main\n\nimport "testing"\n\nfunc TestX(t *testing.T) {}\n',
        },
        "main.go",
    ),
    "ruby": (
        {
            "bin/run.rb": "require_relative '../lib/twice'\nputs twice(21)\n",
            "lib/twice.rb": "def twice(x) = 2 * x\n",
        },
        "bin/run.rb",
    ),
    "bash": (
        {"run.sh": "source ./lib.sh\ntwice 21\n", "lib.sh": "twice() { echo $(($1 * 2)); }\n"},
        "run.sh",
    ),
}


@pytest.mark.parametrize("language", list(FILES))
def test_files_with_entrypoint(api: httpx.Client, language: str) -> None:
    files, entrypoint = FILES[language]
    out = run(api, language=language, files=files, entrypoint=entrypoint, timeout=120)
    assert (out["status"], out["stdout"]) == ("completed", "42\n"), out


def test_default_entrypoint_for_files(api: httpx.Client) -> None:
    out = run(api, language="python", files={"main.py": "print('default entry')"})
    assert out["stdout"] == "default entry\n", out


def test_stderr_and_non_zero_exit_is_failed(api: httpx.Client) -> None:
    code = "import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)\n"
    out = run(api, language="python", code=code)
    assert (out["status"], out["exitCode"]) == ("failed", 3), out
    assert (out["stdout"], out["stderr"]) == ("out\n", "err\n")


def test_typescript_error_points_at_the_ts_line(api: httpx.Client) -> None:
    code = "const a: number = 1;\n\nthrow new Error(`boom ${a}`);\n"
    out = run(api, language="typescript", code=code)
    assert out["status"] == "failed" and out["exitCode"] == 1, out
    assert "Error: boom 1" in out["stderr"] and "index.ts:3" in out["stderr"], out["stderr"]


def test_timeout_kills_the_run_and_removes_its_sandbox(api: httpx.Client, srv: CoveServer) -> None:
    code = "echo started; sleep 31337; echo never"
    out = run(api, language="bash", code=code, timeout=1)
    assert out["status"] == "timeout" and out["exitCode"] == 137, out  # 128 + SIGKILL
    assert out["stdout"] == "started\n" and "timeout of 1 s" in out["error"], out
    wait_sandbox_gone(api, "run-" + out["id"].removeprefix("run_"))
    deadline = time.monotonic() + 30
    while sandbox_processes(srv, "31337"):
        assert time.monotonic() < deadline, sandbox_processes(srv, "31337")
        time.sleep(0.05)
    assert api.get(f"/v1/runs/{out['id']}").json()["status"] == "timeout"


def test_output_keeps_the_last_mebibyte(api: httpx.Client) -> None:
    code = "import sys\nsys.stdout.write('x' * (3 * 1024 * 1024) + 'END\\n')\n"
    out = run(api, language="python", code=code)
    assert out["status"] == "completed", {k: v for k, v in out.items() if k != "stdout"}
    assert len(out["stdout"]) == 1024 * 1024 and out["stdout"].endswith("xEND\n")
    stored = api.get(f"/v1/runs/{out['id']}").json()
    assert stored["stdout"] == out["stdout"]
    listed = next(r for r in api.get("/v1/runs").json()["runs"] if r["id"] == out["id"])
    assert len(listed["stdout"]) == 64 * 1024 and listed["stdout"].endswith("xEND\n")


def test_concurrent_runs_each_get_their_own_sandbox(api: httpx.Client) -> None:
    for box in sandboxes(api):  # earlier runs' sandboxes count against the limit until gone
        wait_sandbox_gone(api, box["name"])
    code = "echo $RANDOM$RANDOM > /tmp/mine; sleep 0.5; cat /tmp/mine; ls /workspace"
    with ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(lambda _: run(api, language="bash", code=code), range(3)))
    assert all(o["status"] == "completed" for o in outs), outs
    assert len({o["stdout"] for o in outs}) == 3  # no run saw another's /tmp
    assert all(o["stdout"].endswith("\nmain.sh\n") for o in outs), outs


# -- bad input -----------------------------------------------------------------------------------

BAD = {
    "code and files": {"language": "python", "code": "print(1)", "files": {"main.py": "x"}},
    "neither code nor files": {"language": "python"},
    "no language": {"code": "print(1)"},
    "unknown language": {"language": "cobol", "code": "x"},
    "language not a string": {"language": 3, "code": "x"},
    "timeout 0": {"language": "python", "code": "print(1)", "timeout": 0},
    "timeout 601": {"language": "python", "code": "print(1)", "timeout": 601},
    "timeout x": {"language": "python", "code": "print(1)", "timeout": "x"},
    "timeout 1.5": {"language": "python", "code": "print(1)", "timeout": 1.5},
    "timeout true": {"language": "python", "code": "print(1)", "timeout": True},
    "unknown field": {"language": "python", "code": "print(1)", "memory": 4096},
    "code not a string": {"language": "python", "code": ["print(1)"]},
    "files ../x": {"language": "python", "files": {"main.py": "1", "../x": "x"}},
    "files /etc/x": {"language": "python", "files": {"main.py": "1", "/etc/x": "x"}},
    "files a/../../x": {"language": "python", "files": {"main.py": "1", "a/../../x": "x"}},
    "files empty": {"language": "python", "files": {}},
    "file content not a string": {"language": "python", "files": {"main.py": 1}},
    "entrypoint missing": {"language": "python", "files": {"a.py": "1"}, "entrypoint": "b.py"},
    "entrypoint ../main.py": {
        "language": "python",
        "files": {"main.py": "1"},
        "entrypoint": "../main.py",
    },
    "packages not a list": {"language": "python", "code": "1", "packages": "six"},
    "package option": {"language": "python", "code": "1", "packages": ["--index-url=http://x"]},
    "packages for bash": {"language": "bash", "code": "echo", "packages": ["jq"]},
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_400_and_does_nothing(api: httpx.Client, case: str) -> None:
    before = api.get("/v1/runs", params={"limit": 500}).json()["runs"]
    r = api.post("/v1/run", json=BAD[case])
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "invalid_request" and body["statusCode"] == 400, body
    assert body["message"]
    assert api.get("/v1/runs", params={"limit": 500}).json()["runs"] == before


def test_body_that_is_not_a_json_object_is_400(api: httpx.Client) -> None:
    for content in (b"[]", b"{", b""):
        r = api.post("/v1/run", content=content)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text


# -- list and get --------------------------------------------------------------------------------


def test_list_newest_first_and_get_returns_the_run(api: httpx.Client) -> None:
    first = run(api, language="bash", code="echo one")
    second = run(api, language="bash", code="echo two")
    listed = api.get("/v1/runs").json()["runs"]
    ids = [r["id"] for r in listed]
    assert ids.index(second["id"]) < ids.index(first["id"]), ids
    assert api.get(f"/v1/runs/{first['id']}").json() == first
    assert api.get(f"/v1/runs/{second['id']}").json() == second
    assert [r["id"] for r in api.get("/v1/runs", params={"limit": 1}).json()["runs"]] == [
        second["id"]
    ]
    for bad in ("0", "x", "501"):
        r = api.get("/v1/runs", params={"limit": bad})
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text
    for rid in (first["id"], second["id"]):
        wait_sandbox_gone(api, "run-" + rid.removeprefix("run_"))


def test_another_workspace_gets_404(api: httpx.Client, srv: CoveServer) -> None:
    out = run(api, language="bash", code="echo private")
    with client(srv, "ws-b") as other:
        r = other.get(f"/v1/runs/{out['id']}")
        assert r.status_code == 404 and r.json()["error"] == "not_found", r.text
        assert out["id"] not in [x["id"] for x in other.get("/v1/runs").json()["runs"]]
    r = api.get("/v1/runs/run_0000000000000000")
    assert r.status_code == 404 and r.json()["statusCode"] == 404, r.text
    assert api.get("/v1/runs", headers={"Authorization": "Bearer nope"}).status_code == 401


# -- billing: charged before anything exists -----------------------------------------------------


def test_runs_are_charged_xs_times_timeout_and_402_changes_nothing(srv: CoveServer) -> None:
    assert account(srv, "ws-d")["balanceMicros"] == 1000
    with client(srv, "ws-d") as poor:
        r = poor.post("/v1/run", json={"language": "bash", "code": "echo", "timeout": 60})
        assert r.status_code == 402, r.text
        body = r.json()
        assert (body["error"], body["price"], body["currency"]) == (
            "payment_required",
            "0.00138",
            "USD",
        ), body
        assert account(srv, "ws-d")["balanceMicros"] == 1000
        assert poor.get("/v1/runs").json()["runs"] == [] and sandboxes(poor) == []
        balance = 1000 - 2 * NOMINAL_MICROS  # a list of runs and one of sandboxes
        out = run(poor, language="bash", code="echo paid")  # 30 s: 690 micros
        assert out["stdout"] == "paid\n"
        assert account(srv, "ws-d")["balanceMicros"] == balance - RUN_MICROS_30S
        r = poor.post("/v1/run", json={"language": "bash", "code": "echo"})
        assert r.status_code == 402, r.text
        assert account(srv, "ws-d")["balanceMicros"] == balance - RUN_MICROS_30S
        assert [x["id"] for x in poor.get("/v1/runs").json()["runs"]] == [out["id"]]
    kinds = account(srv, "ws-d")["kinds"]
    assert kinds["run"] == {"count": 1, "amount": "-0.00069", "micros": -RUN_MICROS_30S}, kinds


def test_sandbox_limit_is_422_and_the_charge_is_given_back(srv: CoveServer) -> None:
    with client(srv, "ws-c") as c:
        names = [unique("full") for _ in range(4)]
        for name in names:
            r = c.post("/v1/sandboxes", json={"name": name, "tier": "xs", "ttl": "60s"})
            assert r.status_code == 201, r.text
        balance = account(srv, "ws-c")["balanceMicros"]
        r = c.post("/v1/run", json={"language": "bash", "code": "echo"})
        assert r.status_code == 422 and r.json()["statusCode"] == 422, r.text
        assert account(srv, "ws-c")["balanceMicros"] == balance
        assert c.get("/v1/runs").json()["runs"] == []
        for name in names:
            assert c.delete(f"/v1/sandboxes/{name}").status_code == 204


# -- packages through the egress proxy (the registries, through this host's mirror) --------------


def test_python_packages_are_installed_first(api: httpx.Client) -> None:
    code = "import six\nprint(six.__version__)\n"
    out = run(api, language="python", code=code, packages=["six==1.16.0"], timeout=60)
    assert (out["status"], out["stdout"]) == ("completed", "1.16.0\n"), out


def test_node_packages_are_installed_first(api: httpx.Client) -> None:
    code = "const isNumber = require('is-number');\nconsole.log(isNumber(5), isNumber('x'));\n"
    out = run(api, language="node", code=code, packages=["is-number@7.0.0"], timeout=60)
    assert (out["status"], out["stdout"]) == ("completed", "true false\n"), out


def test_failed_install_is_a_failed_run_that_says_so(api: httpx.Client) -> None:
    code = "print('never')"
    out = run(api, language="python", code=code, packages=["cove-no-such-package-zz9==0.0.1"])
    assert out["status"] == "failed" and out["exitCode"] != 0, out
    assert "never" not in out["stdout"] and "set-up step failed" in out["error"], out


# -- cove stopping during a run; pure parts --------------------------------------------------------


def test_stopping_cove_during_a_run_leaves_nothing(fresh_server: CoveServer) -> None:
    fresh_server.start()
    with fresh_server.client("ws-a") as c, ThreadPoolExecutor(1) as pool:
        c.timeout = 120
        body = {"language": "bash", "code": "sleep 31337", "timeout": 600}
        pending = pool.submit(c.post, "/v1/run", json=body)
        deadline = time.monotonic() + 60
        while not sandbox_processes(fresh_server, "31337"):
            assert time.monotonic() < deadline and not pending.done(), fresh_server.log()
            time.sleep(0.05)
        assert fresh_server.stop() == 0, fresh_server.log()
        with pytest.raises(httpx.HTTPError):  # cut off with the server; never a stored result
            pending.result().raise_for_status()
    assert leftovers(fresh_server.data_dir) == []


def test_clean_path() -> None:
    from cove.domain.errors import InvalidRequest
    from cove.domain.programs import clean_path

    assert clean_path("./a//b.py") == "a/b.py"
    assert clean_path(".env") == ".env"  # a leading dot of a name is kept
    assert clean_path("a/./b/../c.py") == "a/c.py"
    for bad in ("../x", "/etc/x", "a/../../x", ".", "", " ", "a\0b", None, 3):
        with pytest.raises(InvalidRequest):
            clean_path(bad)

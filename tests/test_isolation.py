"""Attacks from inside a sandbox: host files, host processes, other sandboxes, resources."""

from __future__ import annotations

import pytest
from conftest import unique


@pytest.fixture
def sandbox(api):  # type: ignore[no-untyped-def]
    made = []

    def make(memory: int = 512) -> str:
        name = unique("iso")
        r = api.post(
            "/v0/sandboxes",
            json={"metadata": {"name": name}, "spec": {"runtime": {"memory": memory}}},
        )
        assert r.status_code == 200, r.text
        made.append(name)
        return r.json()["metadata"]["url"]

    yield make
    for name in made:
        api.delete(f"/v0/sandboxes/{name}")


def run(api, url, command, timeout=120):  # type: ignore[no-untyped-def]
    r = api.post(
        url + "/process", json={"command": command, "waitForCompletion": True, "timeout": timeout}
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_memory_hog_is_oom_killed_at_the_limit(api, sandbox):  # type: ignore[no-untyped-def]
    url = sandbox(memory=128)
    hog = 'python3 -c "b=[]\nwhile True: b.append(bytearray(8<<20)); print(len(b)*8, flush=True)"'
    out = run(api, url, hog)
    assert out["exitCode"] == 137, out
    allocated = int(out["stdout"].split()[-1])
    assert 64 <= allocated <= 136  # MiB reached before the kill: the limit, not the host
    assert run(api, url, "echo alive")["stdout"] == "alive\n"  # the sandbox survives


def test_fork_bomb_stops_at_pids_limit(api, sandbox):  # type: ignore[no-untyped-def]
    url = sandbox()
    bomb = "python3 -c \"import os\nn=0\ntry:\n  while True:\n    if os.fork()==0:\n      import time; time.sleep(30); os._exit(0)\n    n+=1\nexcept OSError as e: print('stopped', n, e.errno)\""
    out = run(api, url, bomb)
    assert "stopped" in out["stdout"], out
    forked = int(out["stdout"].split()[1])
    assert forked < 5000  # the pids cgroup, not the host, stopped it
    assert run(api, url, "pkill -9 python3; echo ok")["stdout"] == "ok\n"


def test_no_host_files_or_processes(api, sandbox, tmp_path):  # type: ignore[no-untyped-def]
    url = sandbox()
    secret = tmp_path / "host-secret.txt"
    secret.write_text("top secret")
    out = run(api, url, f"cat {secret}; ls /work /root/.pyenv 2>&1; echo done")
    assert "top secret" not in out["stdout"]
    ps = run(api, url, "ps -eo pid,comm --no-headers")["stdout"].split("\n")
    assert len([line for line in ps if line.strip()]) <= 4  # zygote, sh, ps
    assert "pytest" not in run(api, url, "ps -eo args")["stdout"]
    net = run(api, url, "cat /proc/net/dev")["stdout"]
    assert "lo:" in net and "eth0" not in net


def test_sandboxes_do_not_see_each_other(api, sandbox):  # type: ignore[no-untyped-def]
    first, second = sandbox(), sandbox()
    run(api, first, "echo mine > /tmp/private.txt")
    out = run(api, second, "cat /tmp/private.txt; ls /tmp")
    assert "mine" not in out["stdout"] and out["exitCode"] != 0 or "private" not in out["stdout"]
    assert api.get(second + "/filesystem/tmp/private.txt").status_code == 404


def test_no_privileges_inside(api, sandbox):  # type: ignore[no-untyped-def]
    url = sandbox()
    out = run(api, url, "grep -E 'CapEff|NoNewPrivs|Seccomp:' /proc/self/status")["stdout"]
    assert "NoNewPrivs:\t1" in out and "Seccomp:\t2" in out
    cap = int(next(line for line in out.splitlines() if line.startswith("CapEff")).split()[1], 16)
    assert cap & (1 << 21) == 0  # no CAP_SYS_ADMIN
    assert run(api, url, "mount -t tmpfs x /mnt")["exitCode"] != 0
    assert run(api, url, "unshare -U true")["exitCode"] != 0


def test_file_api_cannot_escape(api, sandbox, tmp_path):  # type: ignore[no-untyped-def]
    url = sandbox()
    secret = tmp_path / "escape.txt"
    secret.write_text("host data")
    run(
        api,
        url,
        f"ln -s {secret} /tmp/abs-link; ln -s ../../../../../../{str(secret).lstrip('/')} /tmp/rel-link",
    )
    for path in (
        "/tmp/abs-link",
        "/tmp/rel-link",
        "/../../../" + str(secret),
        "%2F..%2F..%2F" + str(secret),
    ):
        r = api.get(url + "/filesystem/" + path)
        assert "host data" not in r.text, path
    r = api.put(url + "/filesystem/tmp/abs-link", json={"content": "overwritten"})
    assert secret.read_text() == "host data", r.text
    r = api.put(url + "/filesystem/../../../../tmp/" + secret.name, json={"content": "x"})
    assert secret.read_text() == "host data"


def test_another_sandbox_is_unreachable(api, sandbox):  # type: ignore[no-untyped-def]
    first, second = sandbox(), sandbox()
    api.post(second + "/process", json={"command": "python3 -m http.server 8000 --bind 0.0.0.0"})
    ready = run(
        api,
        second,
        "for i in $(seq 50); do curl -s -o /dev/null localhost:8000 && echo up && break; sleep 0.1; done",
    )
    assert ready["stdout"] == "up\n"  # the server really listens in the second sandbox
    # From the first: its own loopback, a direct connect, and the egress proxy all fail.
    for command in (
        "curl -s -m 3 --noproxy '*' http://127.0.0.1:8000/",
        "python3 -c \"import socket; socket.create_connection(('10.0.0.2', 8000), 3)\"",
        "curl -s -m 3 http://localhost:8000/ -x http://127.0.0.1:3128",
    ):
        out = run(api, first, command)
        assert out["exitCode"] != 0 or "Directory listing" not in out["stdout"], (command, out)

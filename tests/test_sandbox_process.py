"""The process side of the sandbox API through the official SDK (raw HTTP where it has no call)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from conftest import sdk_sandbox, unique
from server import KEYS


@pytest.fixture(scope="module")
def sb(server):  # type: ignore[no-untyped-def]
    """One sandbox for the module (the `sdk` fixture's set-up, at module scope)."""
    with sdk_sandbox(server, "proc") as box:
        yield box


def _url(sb) -> str:  # type: ignore[no-untyped-def]
    return "/sbx/" + sb.metadata.url.rstrip("/").rsplit("/", 1)[-1]


def _error(exc_info) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    exc = exc_info.value
    return exc.status, exc.data if isinstance(exc.data, dict) else json.loads(exc.data)


def test_exec_wait_get_list_logs(sb):  # type: ignore[no-untyped-def]
    r = sb.process.exec({"command": "echo out; echo err >&2; exit 3", "wait_for_completion": True})
    assert (r.status, r.exit_code, r.stdout, r.stderr) == ("failed", 3, "out\n", "err\n")
    assert r.name.startswith("proc-") and r.pid.isdigit()
    assert r.completed_at and r.started_at
    by_name, by_pid = sb.process.get(r.name), sb.process.get(r.pid)
    assert by_name.pid == by_pid.pid == r.pid
    assert r.name in [p.name for p in sb.process.list()]
    assert sb.process.logs(r.name, "stdout") == "out\n"
    assert sb.process.logs(r.name, "stderr") == "err\n"
    assert sorted(sb.process.logs(r.name).splitlines()) == ["err", "out"]
    ok = sb.process.exec(
        {
            "command": "pwd; echo $A",
            "working_dir": "/tmp",
            "env": {"A": "x"},
            "wait_for_completion": True,
        }
    )
    assert (ok.status, ok.exit_code, ok.stdout) == ("completed", 0, "/tmp\nx\n")


def test_running_name_is_400_until_it_ends(sb):  # type: ignore[no-untyped-def]
    name = unique("dup")
    first = sb.process.exec({"name": name, "command": "sleep 30"})
    assert first.status == "running" and first.completed_at in ("", None)
    with pytest.raises(Exception) as info:
        sb.process.exec({"name": name, "command": "true"})
    status, body = _error(info)
    assert status == 400 and "already running" in body["error"]
    sb.process.kill(name)
    assert sb.process.wait(name, max_wait=10000, interval=50).status == "killed"
    again = sb.process.exec({"name": name, "command": "echo again", "wait_for_completion": True})
    assert again.stdout == "again\n" and sb.process.get(name).pid == again.pid


def test_exec_stream_callbacks(sb):  # type: ignore[no-untyped-def]
    logs, outs, errs = [], [], []
    r = sb.process.exec(
        {
            "command": "echo a; sleep 0.2; echo b >&2; printf tail",
            "wait_for_completion": True,
            "on_log": logs.append,
            "on_stdout": outs.append,
            "on_stderr": errs.append,
        }
    )
    assert r.status == "completed"
    assert outs == ["a", "tail"] and errs == ["b"] and logs == ["a", "b", "tail"]


def test_exec_stream_wire_shape(sb, api):  # type: ignore[no-untyped-def]
    body = {"command": "echo hi", "waitForCompletion": True}
    with api.stream(
        "POST", _url(sb) + "/process", json=body, headers={"Accept": "text/event-stream"}
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in resp.iter_lines() if line]
    assert lines[0] == {"type": "stdout", "data": "hi"}
    assert lines[-1]["type"] == "result" and isinstance(lines[-1]["data"], str)
    assert json.loads(lines[-1]["data"])["status"] == "completed"


def test_stream_logs_backfill_and_follow(sb, api):  # type: ignore[no-untyped-def]
    name = unique("follow")
    sb.process.exec({"name": name, "command": "echo early; sleep 0.5; echo late >&2"})
    time.sleep(0.2)  # "early" is written before the stream attaches: it must be replayed
    seen, done = [], threading.Event()
    handle = sb.process.stream_logs(name, {"on_log": seen.append})
    try:
        assert sb.process.wait(name, max_wait=10000, interval=50).status == "completed"
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        handle.close()
        done.set()
    assert seen == ["early", "late"]
    with api.stream("GET", f"{_url(sb)}/process/{name}/logs/stream") as resp:
        text = resp.read().decode()
    assert text.splitlines() == ["stdout:early", "stderr:late"]


def test_wait_long_poll_and_timeout(sb, api):  # type: ignore[no-untyped-def]
    name = unique("slow")
    sb.process.exec({"name": name, "command": "sleep 0.3; echo done"})
    r = sb.process.wait(name, max_wait=10000, interval=5000)  # the long poll answers, not a poll
    assert (r.status, r.stdout) == ("completed", "done\n")
    long = sb.process.exec({"command": "sleep 30"})
    waited = api.get(f"{_url(sb)}/process/{long.pid}/wait", params={"timeout": 1}).json()
    assert waited["status"] == "running"  # the hold ended at its timeout, not the process
    sb.process.kill(long.pid)


def test_stop_then_kill_statuses(sb):  # type: ignore[no-untyped-def]
    a = sb.process.exec({"command": "sleep 30"})
    sb.process.stop(a.pid)
    assert sb.process.wait(a.pid, max_wait=10000, interval=50).status == "stopped"
    # A process that ignores SIGTERM is SIGKILLed after the grace period; still "stopped".
    b = sb.process.exec({"command": "trap '' TERM; sleep 30"})
    time.sleep(0.1)
    sb.process.stop(b.pid)
    r = sb.process.wait(b.pid, max_wait=20000, interval=100)
    assert r.status == "stopped" and r.exit_code == 137
    with pytest.raises(Exception) as info:
        sb.process.kill(b.pid)
    assert _error(info)[0] == 404


def test_timeout_kills(sb):  # type: ignore[no-untyped-def]
    r = sb.process.exec({"command": "echo start; sleep 30", "timeout": 1})
    done = sb.process.wait(r.pid, max_wait=10000, interval=50)
    assert (done.status, done.stdout) == ("killed", "start\n")


def test_restart_on_failure(sb):  # type: ignore[no-untyped-def]
    r = sb.process.exec(
        {"command": "echo run; exit 2", "restart_on_failure": True, "max_restarts": 2}
    )
    done = sb.process.wait(r.name, max_wait=10000, interval=50)
    assert (done.status, done.exit_code, done.restart_count) == ("failed", 2, 2)
    assert done.stdout == "run\n" * 3
    ok = sb.process.exec(
        {
            "command": "true",
            "restart_on_failure": True,
            "max_restarts": 5,
            "wait_for_completion": True,
        }
    )
    assert (ok.status, ok.restart_count) == ("completed", 0)


def test_restart_ends_what_the_failed_run_left_behind(sb):  # type: ignore[no-untyped-def]
    """A crashed command's children (e.g. a server holding its port) go before the restart."""
    marker = unique("orphan")  # in argv, so the leftovers can be counted
    r = sb.process.exec(
        {
            "command": f"bash -c 'exec -a {marker} sleep 300' & sleep 0.2; exit 3",
            "restart_on_failure": True,
            "max_restarts": 2,
        }
    )
    done = sb.process.wait(r.name, max_wait=10000, interval=50)
    assert (done.status, done.restart_count) == ("failed", 2)
    count = f"ps -eo args | grep -c '^{marker}'"
    left = sb.process.exec({"command": count, "wait_for_completion": True})
    assert left.stdout.strip() == "1", left.stdout  # only the last run's child: no restart after it


def test_stdin_write_and_close(sb):  # type: ignore[no-untyped-def]
    name = unique("cat")
    sb.process.exec({"name": name, "command": "cat; echo end", "stdin": True})
    sb.process.write_stdin(name, "line1\n")
    sb.process.write_stdin(name, b"line2\n")
    sb.process.close_stdin(name)
    sb.process.close_stdin(name)  # idempotent
    r = sb.process.wait(name, max_wait=10000, interval=50)
    assert (r.status, r.stdout) == ("completed", "line1\nline2\nend\n")
    other = sb.process.exec({"command": "sleep 5"})
    with pytest.raises(Exception) as info:
        sb.process.write_stdin(other.pid, "x")
    status, body = _error(info)
    assert status == 409 and "stdin" in body["error"]
    sb.process.kill(other.pid)


def test_tty_mode(sb, api):  # type: ignore[no-untyped-def]
    body = {
        # ps shows a controlling terminal only if the zygote made the pty one (TIOCSCTTY)
        "command": "tty; stty size; test -t 0 && echo isatty; ps -o tty= -p $$",
        "tty": True,
        "cols": 100,
        "rows": 30,
        "waitForCompletion": True,
    }
    r = api.post(_url(sb) + "/process", json=body).json()
    out = r["stdout"].replace("\r", "").splitlines()
    assert r["status"] == "completed" and r["tty"] is True
    assert out[0].startswith("/dev/pts/") and out[1:3] == ["30 100", "isatty"]
    assert out[3].strip() == out[0].removeprefix("/dev/")
    # Interactive: the shell reads from the pty (stdin endpoint), echoing like a terminal.
    name = unique("tty")
    api.post(
        _url(sb) + "/process", json={"name": name, "command": "read x; echo got-$x", "tty": True}
    )
    assert api.post(f"{_url(sb)}/process/{name}/stdin", content=b"hey\n").status_code == 200
    done = api.get(f"{_url(sb)}/process/{name}/wait", params={"timeout": 10}).json()
    assert "got-hey" in done["stdout"]
    # Resizing (cove extension): the program sees the new size.
    name = unique("size")
    api.post(
        _url(sb) + "/process",
        json={"name": name, "command": "read x; stty size", "tty": True},
    )
    resized = api.post(f"{_url(sb)}/process/{name}/resize", json={"cols": 132, "rows": 43})
    assert resized.status_code == 200
    api.post(f"{_url(sb)}/process/{name}/stdin", content=b"\n")
    done = api.get(f"{_url(sb)}/process/{name}/wait", params={"timeout": 10}).json()
    assert "43 132" in done["stdout"]
    plain = api.post(_url(sb) + "/process", json={"command": "sleep 5"}).json()
    assert api.post(f"{_url(sb)}/process/{plain['pid']}/resize", json={}).status_code == 409
    api.delete(f"{_url(sb)}/process/{plain['pid']}/kill")


def test_output_of_instant_exit_is_kept(sb):  # type: ignore[no-untyped-def]
    r = sb.process.exec({"command": "head -c 1000000 /dev/zero | tr '\\0' x"})
    done = sb.process.wait(r.pid, max_wait=10000, interval=20)
    assert done.status == "completed"
    assert len(sb.process.logs(r.pid, "stdout")) == 1_000_000


def test_buffers_keep_the_newest_bytes(sb, api):  # type: ignore[no-untyped-def]
    cmd = "head -c 6000000 /dev/zero | tr '\\0' x; echo; echo END"
    r = sb.process.exec({"command": cmd, "wait_for_completion": True})
    assert r.status == "completed"
    assert len(r.stdout) == 64 * 1024 and r.stdout.endswith("x\nEND\n")  # get/exec: 64 KiB
    full = sb.process.logs(r.pid, "stdout")
    assert len(full) == 4 * 1024 * 1024 and full.endswith("x\nEND\n")  # /logs: 4 MiB


@pytest.mark.parametrize(
    "body, why",
    [
        ({}, "command is required"),
        ({"command": "true", "timeout": -1}, "timeout"),
        ({"command": "true", "waitForPorts": [0]}, "waitForPorts"),
        ({"command": "true", "env": {"A": 1}}, "env"),
        ({"command": "true", "maxRestarts": "3"}, "maxRestarts"),
        ({"command": "true", "tty": True, "cols": 0}, "cols"),
        ({"command": "true", "workingDir": "/no/such/dir"}, "/no/such/dir"),
        ({"command": "echo a\u0000b"}, "NUL"),
    ],
)
def test_bad_requests_are_400(sb, api, body, why):  # type: ignore[no-untyped-def]
    resp = api.post(_url(sb) + "/process", json=body)
    assert resp.status_code == 400 and why in resp.json()["error"]


def test_unknown_process_and_v1_prefix(sb, api):  # type: ignore[no-untyped-def]
    for suffix in ("", "/logs", "/wait", "/kill", "/stdin"):
        method = "DELETE" if suffix == "/kill" else "GET"
        resp = api.request(method, f"{_url(sb)}/process/nope{suffix}")
        if suffix == "/stdin":
            resp = api.post(f"{_url(sb)}/process/nope/stdin", content=b"x")
        assert resp.status_code == 404 and "nope" in resp.json()["error"]
    r = api.post(
        f"/v1/sandboxes/{sb.metadata.name}/process",
        json={"command": "echo v1", "waitForCompletion": True},
    ).json()
    assert r["stdout"] == "v1\n"
    assert api.get(f"/v1/sandboxes/{sb.metadata.name}/process/{r['pid']}").json()["pid"] == r["pid"]


def test_process_table_and_log_buffer_bounds(monkeypatch):  # type: ignore[no-untyped-def]
    """No server: the history bounds (count and output budget) and the newest-bytes rule."""
    import asyncio

    from cove.services.processes import manager, output, table

    async def go() -> None:
        monkeypatch.setattr(table, "MAX_PROCESSES", 3)
        monkeypatch.setattr(table, "FINISHED_OUTPUT_LIMIT", 10)
        t = table.ProcessTable()
        procs = []
        for i in range(5):
            p = manager.Process(100 + i, f"p{i % 2}", manager.ExecRequest("true"), None)
            t.add(p)
            t.add_pid(p)
            p.output.append("stdout", b"x" * 4)
            procs.append(p)
        assert t.running_named("p0") is procs[4] and t.by_name("p1") is procs[3]
        for p in procs:
            p.status = "completed"
            t.finished(p)
        assert [p.pid for p in t.all()] == [102, 103, 104]  # the 2 oldest forgotten
        assert t.by_pid(100) is None and t.by_pid(104) is procs[4]
        assert t.by_name("p0") is procs[4] and t.running_named("p0") is None
        # 3 x 4 bytes > 10: the oldest kept one lost its output, the newer two kept theirs
        assert [len(p.output.stdout) for p in procs[2:]] == [0, 4, 4]

    asyncio.run(go())
    buf = output.LogBuffer(limit=5)
    for chunk in (b"ab", b"cdef", b"g"):
        buf.append(chunk)
    assert (buf.text(), buf.text(2), len(buf)) == ("cdefg", "fg", 5)


def test_stuck_stream_reader_stalls_nothing(server, sb):  # type: ignore[no-untyped-def]
    """A client that opens a log stream and never reads: the flooding process still runs to
    its end, and the sandbox API keeps answering."""
    import socket

    name = unique("flood")
    sb.process.exec({"name": name, "command": "sleep 0.2; head -c 50000000 /dev/zero | tr '\\0' x"})
    host, port = server.url.removeprefix("http://").split(":")
    stuck = socket.create_connection((host, int(port)))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(
        f"GET {_url(sb)}/process/{name}/logs/stream HTTP/1.1\r\nHost: x\r\n"
        f"X-Blaxel-Authorization: Bearer {KEYS['ws-a']}\r\nX-Blaxel-Workspace: ws-a\r\n\r\n".encode()
    )
    try:
        done = sb.process.wait(name, max_wait=60000, interval=50)
        assert done.status == "completed"
        assert len(sb.process.logs(name, "stdout")) == 4 * 1024 * 1024
        other = sb.process.exec({"command": "echo alive", "wait_for_completion": True})
        assert other.stdout == "alive\n"
    finally:
        stuck.close()

"""Jobs (issue 7, seed 000 "Jobs", Blaxel Jobs/*): /v1/jobs and /v0/jobs on a real server.

Every task runs in a real sandbox; parallelism is checked from the tasks' own start/end times,
never from wall-clock thresholds.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import tarfile
import time
import zipfile
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from conftest import own_server, unique
from server import COVE, CoveServer, eventually, leftovers

DONE = ("succeeded", "failed", "cancelled")
# Prints what the task was given (env var, file, index/count, an env) and sleeps if asked.
ECHO = """
import json, os, sys, time
payload = json.loads(os.environ["BL_TASK_PAYLOAD"])
with open(os.environ["BL_TASK_PAYLOAD_FILE"]) as f:
    from_file = json.load(f)
print("payload=" + json.dumps(payload, sort_keys=True), "file=" + json.dumps(from_file, sort_keys=True),
      "index=" + os.environ["TASK_INDEX"], "count=" + os.environ["TASK_COUNT"],
      "greeting=" + os.environ.get("GREETING", "-"), flush=True)
time.sleep(float(payload.get("sleep", 0)) if isinstance(payload, dict) else 0)
code = payload.get("exit", 0) if isinstance(payload, dict) else 0
if code:
    print("attempt " + os.environ["TASK_ATTEMPT"] + " fails", file=sys.stderr)
sys.exit(0 if payload.get("pass_on") == int(os.environ["TASK_ATTEMPT"]) else code)
"""
NODE = "const p = JSON.parse(process.env.BL_TASK_PAYLOAD); console.log('node says ' + p.word);\n"


def deploy(api: httpx.Client, name: str, files: dict[str, str], **fields: Any) -> dict:
    r = api.post("/v1/jobs", json={"name": name, "files": files, **fields})
    assert r.status_code == 201, r.text
    return r.json()


def start(api: httpx.Client, job: str, tasks: list[Any], **fields: Any) -> dict:
    r = api.post(f"/v1/jobs/{job}/executions", json={"tasks": tasks, **fields})
    assert r.status_code == 202, r.text
    return r.json()


def wait_done(api: httpx.Client, job: str, exec_id: str, limit: float = 180) -> dict:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        e = api.get(f"/v1/jobs/{job}/executions/{exec_id}").json()
        if e["status"] in DONE:
            return e
        time.sleep(0.2)
    raise AssertionError(f"execution {exec_id} did not finish: {e}")


def wait_running(api: httpx.Client, job: str, exec_id: str, count: int) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        e = api.get(f"/v1/jobs/{job}/executions/{exec_id}").json()
        if sum(t["status"] == "running" for t in e["tasks"]) >= count:
            return e
        time.sleep(0.1)
    raise AssertionError(f"tasks of {exec_id} never ran: {e}")


def job_sandboxes(api: httpx.Client) -> list[dict]:
    return [s for s in api.get("/v1/sandboxes").json()["sandboxes"] if s["source"] == "job"]


def wait_no_job_sandboxes(api: httpx.Client) -> None:
    deadline = time.monotonic() + 60
    while job_sandboxes(api) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job_sandboxes(api) == []


def at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def assert_400(r: httpx.Response, *words: str) -> None:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["statusCode"] == 400 and body["error"] == "invalid_request", body
    for word in words:
        assert word in body["message"], body


def test_deploy_list_get_update_delete(api: httpx.Client) -> None:
    py, node = unique("py"), unique("node")
    job = deploy(api, py, {"main.py": ECHO}, envs={"GREETING": "hi"})
    assert job["runtime"] == "python" and job["revision"] == 1 and job["status"] == "deployed"
    assert job["runtimeConfig"] == {
        "memory": 256,
        "timeout": 300,
        "maxRetries": 0,
        "maxConcurrentTasks": None,
    }
    files = {"package.json": json.dumps({"name": "n", "main": "job.js"}), "job.js": NODE}
    assert deploy(api, node, files)["runtime"] == "node"

    names = [j["name"] for j in api.get("/v1/jobs").json()["jobs"]]
    assert py in names and node in names
    assert api.get(f"/v1/jobs/{py}").json()["envs"] == {"GREETING": "hi"}

    # The node job runs (its entry file comes from package.json "main").
    e = wait_done(api, node, start(api, node, [{"word": "bonjour"}])["id"])
    assert e["status"] == "succeeded", e
    assert e["tasks"][0]["stdout"] == "node says bonjour\n"

    # PUT: a new revision (number + 1), the configuration replaced.
    r = api.put(
        f"/v1/jobs/{py}", json={"files": {"main.py": ECHO}, "runtimeConfig": {"memory": 512}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["revision"] == 2 and r.json()["runtimeConfig"]["memory"] == 512
    assert r.json()["envs"] == {}
    assert api.put(f"/v1/jobs/{py}", json={"files": {"main.py": ECHO}}).json()["revision"] == 3
    assert api.put(f"/v1/jobs/{unique()}", json={"files": {"main.py": ECHO}}).status_code == 404

    assert api.post("/v1/jobs", json={"name": py, "files": {"main.py": ECHO}}).status_code == 409
    for name in (py, node):
        assert api.delete(f"/v1/jobs/{name}").status_code == 204
        assert api.get(f"/v1/jobs/{name}").status_code == 404
    assert deploy(api, py, {"main.py": ECHO})["revision"] == 1  # the name is free again
    api.delete(f"/v1/jobs/{py}")


def test_three_tasks_run_in_parallel_each_with_its_payload(api: httpx.Client) -> None:
    name = unique("par")
    deploy(api, name, {"main.py": ECHO}, envs={"GREETING": "job"})
    tasks = [{"word": w, "sleep": 2} for w in ("alpha", "beta", "gamma")]
    created = start(api, name, tasks, env={"GREETING": "override"})
    assert created["status"] in ("pending", "running") and created["taskCount"] == 3
    assert created["env"] == {"GREETING": "***"}
    e = wait_done(api, name, created["id"])
    assert e["status"] == "succeeded", e
    assert e["stats"]["success"] == 3 and e["stats"]["failure"] == 0
    for i, task in enumerate(e["tasks"]):
        want = json.dumps(tasks[i], sort_keys=True)
        assert task["status"] == "succeeded" and task["exitCode"] == 0 and task["attempts"] == 1
        assert f"payload={want} file={want} index={i} count=3 greeting=override" in task["stdout"]
    # All three ran at once: each started before any of them ended.
    starts = [at(t["startedAt"]) for t in e["tasks"]]
    ends = [at(t["completedAt"]) for t in e["tasks"]]
    assert max(starts) < min(ends), e["tasks"]
    assert api.get(f"/v1/jobs/{name}/executions").json()["executions"][0]["id"] == e["id"]
    api.delete(f"/v1/jobs/{name}")


def test_concurrency_caps_tasks_running_at_once(api: httpx.Client) -> None:
    name = unique("cap")
    deploy(api, name, {"main.py": ECHO}, runtimeConfig={"maxConcurrentTasks": 2})
    e = wait_done(api, name, start(api, name, [{"sleep": 1}] * 5)["id"])
    assert e["status"] == "succeeded" and e["parallelism"] == 2, e
    spans = [(at(t["startedAt"]), at(t["completedAt"])) for t in e["tasks"]]
    most = max(sum(s <= moment < end for s, end in spans) for moment, _ in spans)
    assert most == 2, spans  # never more than 2, and 2 did overlap
    api.delete(f"/v1/jobs/{name}")


def test_failed_tasks_are_retried_then_fail(api: httpx.Client) -> None:
    name = unique("retry")
    deploy(api, name, {"main.py": ECHO}, runtimeConfig={"maxRetries": 2})
    e = wait_done(api, name, start(api, name, [{"exit": 3, "pass_on": 1}, {"exit": 3}])["id"])
    flaky, broken = e["tasks"]
    assert flaky["status"] == "succeeded" and flaky["attempts"] == 2 and flaky["retries"] == 1
    assert broken["status"] == "failed" and broken["attempts"] == 3 and broken["retries"] == 2
    assert broken["exitCode"] == 3 and "attempt 2 fails" in broken["stderr"]
    assert e["status"] == "failed" and e["stats"]["retried"] == 2 and e["stats"]["failure"] == 1
    api.delete(f"/v1/jobs/{name}")


def test_timeout_kills_the_task(api: httpx.Client) -> None:
    name = unique("slow")
    deploy(api, name, {"main.py": ECHO}, runtimeConfig={"timeout": 1})
    e = wait_done(api, name, start(api, name, [{"sleep": 60}])["id"])
    assert e["status"] == "failed" and e["tasks"][0]["status"] == "timeout", e
    assert e["tasks"][0]["durationMs"] < 60_000
    # The SDK's task enum has no timeout: /v0 says failed, with the reason.
    v0 = api.get(f"/v0/jobs/{name}/executions/{e['id']}").json()
    assert v0["status"] == "failed" and v0["tasks"][0]["status"] == "failed"
    assert v0["tasks"][0]["conditions"][0]["reason"] == "Timeout"
    api.delete(f"/v1/jobs/{name}")


def test_cancel_stops_running_and_pending_tasks(api: httpx.Client) -> None:
    name = unique("cancel")
    deploy(api, name, {"main.py": ECHO}, runtimeConfig={"maxConcurrentTasks": 2})
    created = start(api, name, [{"sleep": 300}] * 3)
    wait_running(api, name, created["id"], 2)
    deadline = time.monotonic() + 60
    while len(job_sandboxes(api)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(job_sandboxes(api)) == 2
    r = api.delete(f"/v1/jobs/{name}/executions/{created['id']}")
    assert r.status_code == 200, r.text
    e = wait_done(api, name, created["id"], limit=60)
    assert e["status"] == "cancelled", e
    assert [t["status"] for t in e["tasks"]] == ["cancelled"] * 3
    assert e["tasks"][2]["attempts"] == 0  # the pending one never started
    wait_no_job_sandboxes(api)
    again = api.delete(f"/v1/jobs/{name}/executions/{created['id']}")  # idempotent
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    api.delete(f"/v1/jobs/{name}")


def test_delete_job_cancels_its_executions(api: httpx.Client) -> None:
    name = unique("del")
    deploy(api, name, {"main.py": ECHO})
    created = start(api, name, [{"sleep": 300}])
    wait_running(api, name, created["id"], 1)
    assert api.delete(f"/v1/jobs/{name}").status_code == 204
    assert api.get(f"/v1/jobs/{name}/executions/{created['id']}").status_code == 404
    wait_no_job_sandboxes(api)


def test_memory_override_only_downwards(api: httpx.Client) -> None:
    name = unique("mem")
    deploy(api, name, {"main.py": ECHO}, runtimeConfig={"memory": 256})
    r = api.post(f"/v1/jobs/{name}/executions", json={"tasks": [{}], "memory": 512})
    assert_400(r, "above the job's 256 MB")
    assert_400(api.post(f"/v1/jobs/{name}/executions", json={"tasks": [{}], "memory": 127}))
    e = wait_done(api, name, start(api, name, [{}], memory=128)["id"])
    assert e["status"] == "succeeded" and e["memory"] == 128
    assert api.get(f"/v1/jobs/{name}/executions").json()["total"] == 1  # refused ones: none
    api.delete(f"/v1/jobs/{name}")


def test_running_executions_keep_their_revision(api: httpx.Client) -> None:
    name = unique("rev")
    v1 = 'import time; time.sleep(1); print("v1")\n'
    deploy(api, name, {"main.py": v1}, runtimeConfig={"maxConcurrentTasks": 1})
    created = start(api, name, [{}, {}])
    wait_running(api, name, created["id"], 1)
    r = api.put(f"/v1/jobs/{name}", json={"files": {"main.py": 'print("v2")\n'}})
    assert r.json()["revision"] == 2
    e = wait_done(api, name, created["id"])
    assert e["revision"] == 1 and [t["stdout"] for t in e["tasks"]] == ["v1\n", "v1\n"], e
    later = wait_done(api, name, start(api, name, [{}])["id"])
    assert later["revision"] == 2 and later["tasks"][0]["stdout"] == "v2\n"
    api.delete(f"/v1/jobs/{name}")


def _zip(entries: dict[str, bytes], link: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in entries.items():
            zf.writestr(path, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = 0o120777 << 16  # a symlink
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def _tgz(entries: dict[str, bytes], symlink: str | None = None, device: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for path, data in entries.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tf.addfile(info)
        if device:
            info = tarfile.TarInfo(device)
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tf.addfile(info)
    return buf.getvalue()


def test_binary_uploads_zip_and_tar_gz(api: httpx.Client) -> None:
    name = unique("zip")
    main = b"import os\nfrom lib.util import word\nprint(word, os.environ['A'])\n"
    archive = _zip({"proj/main.py": main, "proj/lib/util.py": b"word = 'zipped'\n"})
    params = {"name": name, "timeout": "30", "maxRetries": "1", "envs": '{"A": "1"}'}
    headers = {"content-type": "application/zip"}
    r = api.post("/v1/jobs", content=archive, params=params, headers=headers)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["files"] == ["lib/util.py", "main.py"]  # the common top directory is stripped
    assert job["runtimeConfig"]["timeout"] == 30 and job["runtimeConfig"]["maxRetries"] == 1
    assert wait_done(api, name, start(api, name, [{}])["id"])["tasks"][0]["stdout"] == "zipped 1\n"

    tgz = _tgz({"./main.py": b"print('tarred')\n"})
    for kind in ("application/x-tar+gzip", "application/gzip"):
        r = api.put(f"/v1/jobs/{name}", content=tgz, headers={"content-type": kind})
        assert r.status_code == 200, r.text
    assert r.json()["revision"] == 3 and r.json()["files"] == ["main.py"]
    assert wait_done(api, name, start(api, name, [{}])["id"])["tasks"][0]["stdout"] == "tarred\n"
    api.delete(f"/v1/jobs/{name}")


def test_bad_input_is_400(api: httpx.Client) -> None:
    ok = {"main.py": "print(1)\n"}
    cases = [
        ({"runtimeConfig": {"memory": 127}}, "memory"),
        ({"runtimeConfig": {"memory": 4097}}, "memory"),
        ({"runtimeConfig": {"memory": "256"}}, "memory"),
        ({"runtimeConfig": {"timeout": 0}}, "timeout"),
        ({"runtimeConfig": {"timeout": 3601}}, "timeout"),
        ({"runtimeConfig": {"maxRetries": 11}}, "maxRetries"),
        ({"schedule": "every minute"}, "cron"),
        ({"schedule": "61 * * * *"}, "cron"),
        ({"schedule": "* * * * * * *"}, "cron"),
        ({"runtime": "cobol"}, "runtime"),
        ({"files": {"README": "hi"}}, "runtime"),
        ({"files": {"../main.py": "x"}}, "relative path"),
        ({"files": {"/main.py": "x"}}, "relative path"),
        ({"files": {}}, "files"),
        ({"envs": {"1BAD": "x"}}, "envs"),
        ({"colour": "blue"}, "unknown field"),
        ({"name": "Bad_Name"}, "name"),
    ]
    for extra, word in cases:
        body = {"name": unique("bad"), "files": ok, **extra}
        assert_400(api.post("/v1/jobs", json=body), word)
    assert_400(api.post("/v1/jobs", content=b"{nope"), "JSON")

    evil = [
        ("application/zip", _zip({"../evil.py": b"x"}), "relative path"),
        ("application/zip", _zip({"/abs.py": b"x"}), "relative path"),
        ("application/zip", _zip({"a/../../evil.py": b"x"}), "relative path"),
        ("application/zip", _zip({"main.py": b"x"}, link="link.py"), "link"),
        ("application/zip", _zip({"big.py": b"0" * (51 * 1024 * 1024)}), "exceed"),
        ("application/zip", b"not a zip", "zip"),
        ("application/gzip", _tgz({"../../evil.py": b"x"}), "relative path"),
        ("application/gzip", _tgz({"main.py": b"x"}, symlink="link.py"), "link"),
        ("application/gzip", _tgz({"main.py": b"x"}, device="null"), "special"),
        ("application/x-tar+gzip", b"\x1f\x8b garbage", "tar"),
    ]
    for kind, body, word in evil:
        name = unique("evil")
        r = api.post(
            "/v1/jobs", content=body, params={"name": name}, headers={"content-type": kind}
        )
        assert_400(r, word)
        assert api.get(f"/v1/jobs/{name}").status_code == 404

    name = unique("good")
    deploy(api, name, ok)
    for body in ({}, {"tasks": []}, {"tasks": "x"}, {"tasks": [{}], "env": {"1BAD": "x"}}):
        assert_400(api.post(f"/v1/jobs/{name}/executions", json=body))
    assert api.post(f"/v1/jobs/{unique()}/executions", json={"tasks": [{}]}).status_code == 404
    assert api.get(f"/v1/jobs/{name}/executions/exec-nope").status_code == 404
    assert api.get(f"/v1/jobs/{name}/executions").json()["total"] == 0
    api.delete(f"/v1/jobs/{name}")
    off = unique("off")
    assert deploy(api, off, ok, enabled=False)["status"] == "disabled"
    assert api.post(f"/v1/jobs/{off}/executions", json={"tasks": [{}]}).status_code == 409
    api.delete(f"/v1/jobs/{off}")
    assert job_sandboxes(api) == []


def test_missed_run_rule() -> None:
    """domain.jobs.due_tick: one tick per pass, the newest one due; None when none is."""
    from cove.domain.jobs import due_tick

    t = datetime.fromisoformat
    last = t("2026-01-01T00:00:30+00:00")
    assert due_tick("* * * * *", last, t("2026-01-01T00:00:59+00:00")) is None
    assert due_tick("* * * * *", last, t("2026-01-01T00:01:00+00:00")) == t(
        "2026-01-01T00:01:00+00:00"
    )
    # Down from 00:00:30 to 03:07:10: 187 ticks missed, one fires (03:07), then the schedule goes on.
    late = t("2026-01-01T03:07:10+00:00")
    assert due_tick("* * * * *", last, late) == t("2026-01-01T03:07:00+00:00")
    assert due_tick("0 * * * *", last, late) == t("2026-01-01T03:00:00+00:00")
    assert due_tick("*/5 * * * * *", late, t("2026-01-01T03:07:14+00:00")) is None
    assert due_tick("*/5 * * * * *", late, t("2026-01-01T03:07:16+00:00")) == t(
        "2026-01-01T03:07:15+00:00"
    )


def test_other_workspace_sees_nothing(server: CoveServer, api: httpx.Client) -> None:
    name = unique("mine")
    deploy(api, name, {"main.py": ECHO})
    e = wait_done(api, name, start(api, name, [{}])["id"])
    with server.client("ws-b") as other:
        for path in (f"/v1/jobs/{name}", f"/v0/jobs/{name}", f"/v1/jobs/{name}/executions"):
            assert other.get(path).status_code == 404
        assert other.get(f"/v1/jobs/{name}/executions/{e['id']}").status_code == 404
        assert other.delete(f"/v1/jobs/{name}/executions/{e['id']}").status_code == 404
        assert other.post(f"/v1/jobs/{name}/executions", json={"tasks": [{}]}).status_code == 404
        assert other.put(f"/v1/jobs/{name}", json={"files": {"main.py": ""}}).status_code == 404
        assert other.delete(f"/v1/jobs/{name}").status_code == 404
        assert name not in [j["name"] for j in other.get("/v1/jobs").json()["jobs"]]
        assert deploy(other, name, {"main.py": ECHO})["revision"] == 1  # names are per workspace
        other.delete(f"/v1/jobs/{name}")
    assert api.get(f"/v1/jobs/{name}").status_code == 200
    api.delete(f"/v1/jobs/{name}")


def test_cron_every_minute_fires(api: httpx.Client) -> None:
    name = unique("cron")
    job = deploy(api, name, {"main.py": ECHO}, schedule="* * * * *")
    assert job["schedule"] == "* * * * *" and at(job["nextRunAt"]).second == 0
    deadline = time.monotonic() + 60 + 60  # the next minute, plus a generous margin
    runs: list[dict] = []
    while not runs and time.monotonic() < deadline:
        runs = api.get(f"/v1/jobs/{name}/executions").json()["executions"]
        time.sleep(0.5)
    assert runs, "the cron job never fired"
    assert runs[0]["trigger"] == "cron" and runs[0]["taskCount"] == 1
    assert at(runs[0]["scheduledAt"]).second == 0
    assert at(runs[0]["scheduledAt"]) == at(job["nextRunAt"])
    api.delete(f"/v1/jobs/{name}")


def test_v0_jobs_through_the_sdk(server: CoveServer, api: httpx.Client) -> None:
    from blaxel.core.client import client
    from blaxel.core.client.api.jobs import create_job, get_job, list_jobs
    from blaxel.core.client.models import Job
    from blaxel.core.jobs import bl_job

    client.with_base_url(server.url + "/v0")
    name = unique("sdk")
    body = {
        "metadata": {"name": name, "labels": {"team": "a"}},
        "spec": {
            "runtime": {
                "memory": 512,
                "timeout": 120,
                "envs": [{"name": "GREETING", "value": "hi"}],
            },
            "source": {"files": {"main.py": ECHO}},
        },
    }
    made = create_job.sync(client=client, body=Job.from_dict(body))
    assert made is not None and made.metadata.name == name and made.status == "DEPLOYED"
    got = get_job.sync(name, client=client)
    assert got is not None and got.spec.runtime.memory == 512 and got.spec.runtime.timeout == 120
    listed = list_jobs.sync(client=client)
    assert name in [j.metadata.name for j in listed.data]

    job = bl_job(name)
    exec_id = job.run([{"word": "John"}, {"word": "Jane"}], env={"GREETING": "hello"}, memory=256)
    result = job.wait_for_execution(exec_id, max_wait=180, interval=1)
    assert result.status == "succeeded" and result.metadata.id == exec_id
    assert result.stats.success == 2 and result.spec.task_count == 2
    assert result.spec.memory_override == 256
    assert [t.status for t in result.tasks] == ["succeeded", "succeeded"]
    logs = [t.additional_properties["logs"]["stdout"] for t in result.tasks]
    assert "John" in logs[0] and "Jane" in logs[1] and "greeting=hello" in logs[0]
    assert job.get_execution_status(exec_id) == "succeeded"
    assert exec_id in [e.metadata.id for e in job.list_executions(limit=10)]
    tasks = api.get(f"/v0/jobs/{name}/executions/{exec_id}/tasks").json()
    assert [t["metadata"]["name"] for t in tasks["data"]] == ["task-0", "task-1"]

    with pytest.raises(Exception, match="400"):
        job.run([{}], memory=1024)  # above the job's 512 MB
    with pytest.raises(Exception, match="not found"):
        job.get_execution("exec-missing")

    slow = job.run([{"sleep": 300}])
    deadline = time.monotonic() + 120
    while job.get_execution_status(slow) != "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    job.cancel_execution(slow)
    assert job.wait_for_execution(slow, max_wait=60, interval=1).status == "cancelled"

    # A PUT without source keeps the code; the revision moves on.
    put = api.put(f"/v0/jobs/{name}", json={**got.to_dict(), "spec": {"runtime": {"memory": 1024}}})
    assert put.status_code == 200, put.text
    assert put.json()["spec"]["revision"]["active"] == "2"
    assert put.json()["spec"]["runtime"]["memory"] == 1024
    assert api.delete(f"/v0/jobs/{name}").status_code == 200
    assert api.get(f"/v0/jobs/{name}").status_code == 404
    wait_no_job_sandboxes(api)


def _usage(srv: CoveServer, workspace: str, kind: str = "job") -> tuple[int, int]:
    run = subprocess.run(
        [str(COVE), "admin", "usage", workspace],
        capture_output=True,
        text=True,
        timeout=60,
        env={**srv.env},
    )
    assert run.returncode == 0, run.stderr
    kinds = json.loads(run.stdout)[0]["kinds"]
    entry = kinds.get(kind, {"count": 0, "micros": 0})
    return entry["count"], entry["micros"]


def test_every_job_call_is_charged_nominally(server: CoveServer, api: httpx.Client) -> None:
    name = unique("bill")
    before, voided = _usage(server, "ws-a"), _usage(server, "ws-a", "void")
    deploy(api, name, {"main.py": ECHO})
    api.get(f"/v1/jobs/{name}")
    api.get("/v0/jobs")
    api.delete(f"/v1/jobs/{name}")
    # metering (billing not enforced) writes its entries just after the answers
    assert eventually(lambda: _usage(server, "ws-a") == (before[0] + 4, before[1] - 40))
    assert api.get(f"/v1/jobs/{name}").status_code == 404  # charged, then given back
    assert eventually(lambda: _usage(server, "ws-a") == (before[0] + 5, before[1] - 50))
    assert eventually(lambda: _usage(server, "ws-a", "void") == (voided[0] + 1, voided[1] + 10))


@pytest.fixture
def poor() -> Iterator[CoveServer]:
    with own_server(COVE_API_KEYS="k-poor:w-poor:0.00002", COVE_BILLING="enforce") as srv:
        yield srv


def test_402_when_the_balance_is_short_changes_nothing(poor: CoveServer) -> None:
    with httpx.Client(base_url=poor.url, headers={"Authorization": "Bearer k-poor"}) as api:
        deploy(api, "first", {"main.py": ECHO})
        assert api.get("/v1/jobs/first").status_code == 200
        r = api.post("/v1/jobs", json={"name": "second", "files": {"main.py": ECHO}})
        assert r.status_code == 402, r.text
        assert r.json()["price"] == "0.00001" and r.json()["currency"] == "USD"
        assert api.post("/v1/jobs/first/executions", json={"tasks": [{}]}).status_code == 402
        top = subprocess.run(
            [str(COVE), "admin", "top-up", "w-poor", "1"], env={**poor.env}, capture_output=True
        )
        assert top.returncode == 0, top.stderr
        assert [j["name"] for j in api.get("/v1/jobs").json()["jobs"]] == ["first"]
        assert api.get("/v1/jobs/first/executions").json()["total"] == 0


def test_restart_fails_executions_in_flight(fresh_server: CoveServer) -> None:
    srv = fresh_server.start()
    with srv.client() as api:
        deploy(api, "sleeper", {"main.py": ECHO})
        created = start(api, "sleeper", [{"sleep": 300}, {"sleep": 300}], env={})
        wait_running(api, "sleeper", created["id"], 2)
    srv.stop(signal.SIGKILL)
    srv.start()
    with srv.client() as api:
        e = api.get(f"/v1/jobs/sleeper/executions/{created['id']}").json()
        assert e["status"] == "failed" and "cove stopped" in e["error"], e
        assert [t["status"] for t in e["tasks"]] == ["failed", "failed"]
        wait_no_job_sandboxes(api)  # the sandboxes the crash left behind are deleted
        # The job itself survived and still runs.
        assert wait_done(api, "sleeper", start(api, "sleeper", [{}])["id"])["status"] == "succeeded"
        stopped = start(api, "sleeper", [{"sleep": 300}])
        wait_running(api, "sleeper", stopped["id"], 1)
    assert srv.stop() == 0  # SIGTERM: the running task fails, its sandbox goes
    assert leftovers(srv.data_dir) == []
    srv.start()
    with srv.client() as api:
        e = api.get(f"/v1/jobs/sleeper/executions/{stopped['id']}").json()
        assert e["status"] == "failed" and "cove was stopped" in e["tasks"][0]["error"], e
        assert job_sandboxes(api) == []
    assert srv.stop() == 0


def test_cron_missed_ticks_fire_once_after_downtime(fresh_server: CoveServer) -> None:
    """Every 2 s (6 fields: seconds first); ≥ 3 ticks pass while cove is down → ONE catch-up."""
    srv = fresh_server
    srv.env["COVE_CRON_TICK_S"] = "0.2"
    srv.start()
    with srv.client() as api:
        deploy(api, "ticker", {"main.py": "print('tick')\n"}, schedule="*/2 * * * * *")
        deadline = time.monotonic() + 30
        while (
            not api.get("/v1/jobs/ticker/executions").json()["total"]
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert api.get("/v1/jobs/ticker/executions").json()["total"] >= 1
    assert srv.stop() == 0
    stopped = datetime.now().astimezone()
    time.sleep(7)
    srv.start()
    with srv.client() as api:
        deadline = time.monotonic() + 30
        later: list[dict] = []
        while not later and time.monotonic() < deadline:
            runs = api.get("/v1/jobs/ticker/executions").json()["executions"]
            later = [r for r in runs if at(r["scheduledAt"]) > stopped]
            time.sleep(0.2)
        first = min(later, key=lambda r: at(r["createdAt"]))
        # Only the newest tick before the first pass fired: none of the 3+ missed ones before it.
        fired = sorted(at(r["scheduledAt"]) for r in later)
        assert fired[0] == at(first["scheduledAt"]), later
        assert (at(first["scheduledAt"]) - stopped).total_seconds() > 4, (first, stopped)
        assert len(set(fired)) == len(fired)
        api.put("/v1/jobs/ticker", json={"files": {"main.py": "print(1)\n"}})  # no schedule
    assert srv.stop() == 0
    assert leftovers(srv.data_dir) == []


def test_job_program_reads_package_json_defensively() -> None:
    """package.json shapes a user may send: a 400 or a sane default, never a crash."""
    import json as _json

    from cove.domain.errors import InvalidRequest
    from cove.domain.job_programs import job_program

    odd = {"package.json": _json.dumps({"scripts": "node x.js"}).encode(), "x.js": b""}
    with pytest.raises(InvalidRequest):  # no start script, no entry file: say so
        job_program("node", None, odd)
    outside = {"package.json": _json.dumps({"main": "../x.js"}).encode(), "x.js": b"1"}
    with pytest.raises(InvalidRequest):  # not lstrip'ed into x.js
        job_program("node", None, outside)
    inside = {"package.json": _json.dumps({"main": "./lib/x.js"}).encode(), "lib/x.js": b"1"}
    assert "lib/x.js" in job_program("node", None, inside).command

#!/usr/bin/env python3
"""Ephemeral run latency: `print(1)` (or the language's equivalent) through POST /v1/run, per
language, next to the same code run by a bare interpreter on the host, in the same run.

Runs a real `cove serve`. Three rows per language: the client-observed POST /v1/run (a sandbox
claimed from the warm pool, the file written, the program run, the sandbox deleted); the same
command exec'd in one live sandbox through the process API (so the difference is what a run's
own sandbox costs); and the host interpreter (fork+exec from this process, no sandbox, no HTTP).
The host has no TypeScript compiler (and maybe no ruby or go): those rows are left out, said so.

    .venv/bin/python bench/runs.py [--n 20] [--languages python,node,...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))
from rawhttp import SyncClient  # noqa: E402
from report import emit, timed  # noqa: E402
from server import KEYS, served  # noqa: E402

from cove.domain.programs import WORKDIR, code_program  # noqa: E402

HEADERS = {"Authorization": f"Bearer {KEYS['ws-a']}"}
PRINT_ONE = {
    "python": "print(1)",
    "node": "console.log(1)",
    "typescript": "const one: number = 1;\nconsole.log(one);",
    "bash": "echo 1",
    "ruby": "puts 1",
    "go": 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println(1) }\n',
}
# The host's bare interpreters: argv prefix and how the code is passed (None: not on this host).
HOST = {
    "python": ["/usr/bin/python3", "-c"],
    "node": [shutil.which("node") or "", "-e"],
    "bash": ["/bin/bash", "-c"],
    "ruby": [shutil.which("ruby") or "", "-e"],
}


def host_argv(language: str, code: str, tmp: Path) -> list[str] | None:
    if language == "go":
        if shutil.which("go") is None:
            return None
        (tmp / "main.go").write_text(code)
        return ["go", "run", str(tmp / "main.go")]
    argv = HOST.get(language)
    if argv is None or not argv[0] or not os.path.exists(argv[0]):
        return None
    return [*argv, code]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--languages", default=",".join(PRINT_ONE))
    args = ap.parse_args()
    with served(COVE_POOL_SIZE="4") as srv:
        tmp = srv.data_dir / "host"
        tmp.mkdir()
        c = SyncClient(srv.url, HEADERS)
        box = "bench-" + uuid.uuid4().hex[:6]
        status, _ = c.request("POST", "/v1/sandboxes", {"name": box, "tier": "xs", "ttl": "1h"})
        assert status == 201
        for language in args.languages.split(","):
            bench_language(c, box, language, args.n, tmp)
        c.request("DELETE", f"/v1/sandboxes/{box}")


def bench_language(c: SyncClient, box: str, language: str, n: int, tmp: Path) -> None:
    code = PRINT_ONE[language]
    server_ms: list[float] = []

    def run_once() -> None:
        status, out = c.request("POST", "/v1/run", {"language": language, "code": code})
        assert status == 200 and out["stdout"] == "1\n", (status, out)
        server_ms.append(out["durationMs"])

    emit(f"run_{language}_print1", timed(run_once, n, warmup=2), note="POST /v1/run, client")
    emit(f"run_{language}_print1_server", server_ms[2:], note="durationMs the run reports")

    program = code_program(language, code, None, None, [])
    for path, content in program.files.items():
        status, _ = c.request(
            "PUT", f"/v1/sandboxes/{box}/filesystem{WORKDIR}/{path}", {"content": content.decode()}
        )
        assert status == 200, status
    body = {
        "command": program.command,
        "env": program.env,
        "workingDir": WORKDIR,
        "waitForCompletion": True,
    }

    def exec_once() -> None:
        status, out = c.request("POST", f"/v1/sandboxes/{box}/process", body)
        assert status == 200 and out["stdout"] == "1\n", (status, out)

    emit(
        f"exec_{language}_print1_in_live_sandbox",
        timed(exec_once, n, warmup=2),
        note=f"process API: {program.command}",
    )

    argv = host_argv(language, code, tmp)
    if argv is None:
        print(f'{{"name": "host_{language}_print1", "note": "no {language} on this host"}}')
        return

    def host_once() -> None:
        done = subprocess.run(argv, capture_output=True, cwd=tmp, check=True)
        assert done.stdout == b"1\n", done

    emit(f"host_{language}_print1", timed(host_once, n, warmup=2), note=" ".join(argv[:-1]))


if __name__ == "__main__":
    start = time.monotonic()
    main()
    print(f'{{"name": "bench_runs_wall", "seconds": {time.monotonic() - start:.1f}}}')

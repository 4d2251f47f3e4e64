"""What code to run and how: a file map + install steps + one command, for every language.

Shared by ephemeral runs (/v1/run), deploys and jobs. Pure data: nothing here touches a sandbox.
Languages (runs): python, node, typescript, bash, ruby, go. Runtimes (deploy, jobs): node,
python, go, static, custom — auto-detected from the files when not given. A Run is the record of
one ephemeral run.
"""

from __future__ import annotations

import posixpath
import secrets
import shlex
from dataclasses import dataclass, field
from datetime import datetime

from cove.domain.errors import InvalidRequest

WORKDIR = "/workspace"  # where the files land inside the sandbox
PY_DEPS = f"{WORKDIR}/.packages"  # pip --target: no venv needed, no system site touched
MAX_FILES = 1000
MAX_FILES_BYTES = 50 * 1024 * 1024
MAX_PACKAGES = 100

LANGUAGES = ("python", "node", "typescript", "bash", "ruby", "go")
# Built into the base image by runtime/images.py (TS_RUNNER_PATH): transpile-on-require, then run.
TS_RUNNER = "/usr/local/lib/cove/ts-run.js"
# go's build cache and module dir must be writable; HOME is /root. The image's std is precompiled
# with cgo, so cgo stays on (without gcc, net & co would otherwise be recompiled: seconds).
GO_ENV = {"GOCACHE": "/tmp/go-cache", "GOPATH": "/tmp/go"}
DEFAULT_ENTRY = {
    "python": "main.py",
    "node": "index.js",
    "typescript": "index.ts",
    "bash": "main.sh",
    "ruby": "main.rb",
    "go": "main.go",
}


@dataclass(frozen=True)
class Program:
    files: dict[str, bytes]  # relative paths under WORKDIR
    setup: tuple[str, ...] = ()  # shell commands that must each succeed before `command`
    command: str = ""
    env: dict[str, str] = field(default_factory=dict)


def clean_files(raw: object, field_name: str = "files") -> dict[str, bytes]:
    """A `{"path": "content"}` map → relative, normalized paths (no `..`, no absolute)."""
    if not isinstance(raw, dict) or not raw:
        raise InvalidRequest(f"{field_name} must be a non-empty object of path → content")
    if len(raw) > MAX_FILES:
        raise InvalidRequest(f"{field_name} may hold at most {MAX_FILES} files")
    files: dict[str, bytes] = {}
    for path, content in raw.items():
        if not isinstance(content, str):
            raise InvalidRequest(f"{field_name}[{path!r}] must be a string")
        files[clean_path(path, field_name)] = content.encode()
    if sum(len(v) for v in files.values()) > MAX_FILES_BYTES:
        raise InvalidRequest(f"{field_name} are larger than {MAX_FILES_BYTES} bytes")
    return files


def clean_path(path: object, field_name: str = "files") -> str:
    """`./a//b.py` → `a/b.py`; absolute paths and any way out (`..`) are refused."""
    if not isinstance(path, str) or not path.strip() or "\0" in path:
        raise InvalidRequest(f"{field_name}: {path!r} is not a file path")
    norm = posixpath.normpath(path)  # keeps a leading dot of a name: ".env" stays ".env"
    if norm.startswith("/") or norm == ".." or norm.startswith("../") or norm == ".":
        raise InvalidRequest(f"{field_name}: {path!r} must be a relative path inside the project")
    return norm


def code_program(
    language: str,
    code: str | None,
    files: dict[str, bytes] | None,
    entrypoint: str | None,
    packages: list[str],
) -> Program:
    """An ephemeral run: `code` xor `files` (+ entrypoint), `packages` installed first."""
    if language not in LANGUAGES:
        raise InvalidRequest(f"language must be one of {', '.join(LANGUAGES)}")
    if (code is None) == (files is None):
        raise InvalidRequest("give exactly one of code and files")
    entry = clean_path(entrypoint, "entrypoint") if entrypoint else DEFAULT_ENTRY[language]
    files = dict(files) if files is not None else {entry: (code or "").encode()}
    if entry not in files:
        raise InvalidRequest(f"entrypoint {entry!r} is not among the files")
    setup = (install_step(language, packages),) if packages else ()
    command, env = _runner(language, entry, files)
    return Program(files, setup, command, env)


def install_step(language: str, packages: list[str]) -> str:
    """The shell command that installs `packages` for `language` (pip or npm)."""
    if len(packages) > MAX_PACKAGES:
        raise InvalidRequest(f"packages: at most {MAX_PACKAGES}")
    for pkg in packages:
        if not isinstance(pkg, str) or not pkg.strip() or pkg.strip().startswith("-"):
            raise InvalidRequest(f"packages: {pkg!r} is not a package name")
    names = " ".join(shlex.quote(p.strip()) for p in packages)
    if language == "python":
        return (
            "python3 -m pip install -q --no-cache-dir --disable-pip-version-check "
            f"--root-user-action=ignore --target {PY_DEPS} {names}"
        )
    if language in ("node", "typescript"):
        return f"npm install --no-audit --no-fund --no-update-notifier --no-save {names}"
    raise InvalidRequest(f"packages are supported for python, node and typescript, not {language}")


def _runner(language: str, entry: str, files: dict[str, bytes]) -> tuple[str, dict[str, str]]:
    quoted = shlex.quote(entry)
    if language == "python":
        return f"python3 {quoted}", {"PYTHONPATH": PY_DEPS, "PYTHONUNBUFFERED": "1"}
    if language == "node":
        return f"node {quoted}", {}
    if language == "bash":
        return f"bash {quoted}", {}
    if language == "ruby":
        return f"ruby {quoted}", {}
    if language == "go":
        return f"go run {_go_sources(entry, files)}", GO_ENV
    return f"node --enable-source-maps {TS_RUNNER} {quoted}", {}


def _go_sources(entry: str, files: dict[str, bytes]) -> str:
    """The entry's package: every non-test .go file beside it (`go run .` would need a go.mod)."""
    folder = posixpath.dirname(entry)
    siblings = sorted(
        path
        for path in files
        if posixpath.dirname(path) == folder
        and path.endswith(".go")
        and not path.endswith("_test.go")
    )
    if entry not in siblings:  # an entry not named *.go: go run takes it alone
        siblings = [entry]
    return " ".join(shlex.quote(path) for path in siblings)


# -- ephemeral runs (seed 000 "Run Code") ---------------------------------------------------------

DEFAULT_RUN_TIMEOUT_S, MAX_RUN_TIMEOUT_S = 30, 600
RUN_TIER = "xs"  # memory and price of every run
RUN_OUTPUT_LIMIT = 1024 * 1024  # a run keeps the last 1 MiB of stdout and of stderr


@dataclass
class Run:
    id: str
    workspace: str
    language: str
    timeout_s: int
    created_at: datetime
    status: str = "running"  # then completed | failed | timeout | error
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    duration_ms: int = 0
    completed_at: datetime | None = None
    error: str | None = None  # why, when set-up failed, time ran out or the platform failed


def new_run_id() -> str:
    return "run_" + secrets.token_hex(8)


def run_timeout(value: object) -> int:
    """`timeout` of a run: whole seconds from 1 to 600, 30 when absent."""
    if value is None:
        return DEFAULT_RUN_TIMEOUT_S
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_RUN_TIMEOUT_S:
        raise InvalidRequest(
            f"timeout must be a whole number of seconds from 1 to {MAX_RUN_TIMEOUT_S}"
        )
    return value


def tail(text: str, limit: int = RUN_OUTPUT_LIMIT) -> str:
    """The last `limit` bytes of text (UTF-8), cut at a character boundary."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[len(data) - limit :].decode("utf-8", errors="ignore")

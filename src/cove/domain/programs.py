"""What code to run and how: a file map + install steps + one command, for every language.

Shared by ephemeral runs (/v1/run), deploys and jobs. Pure data: nothing here touches a sandbox.
Languages (runs): python, node, typescript, bash, ruby, go. Runtimes (deploy, jobs): node,
python, go, static, custom — auto-detected from the files when not given.
"""

from __future__ import annotations

import json
import posixpath
import shlex
from dataclasses import dataclass, field
from typing import Any

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
PY_ENV = {"PYTHONPATH": PY_DEPS, "PYTHONUNBUFFERED": "1"}
PIP_INSTALL = (  # + requirement specs, or -r requirements.txt
    "python3 -m pip install -q --no-cache-dir --disable-pip-version-check "
    f"--root-user-action=ignore --target {PY_DEPS}"
)
NPM_FLAGS = "--no-audit --no-fund --no-update-notifier"
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
        return f"{PIP_INSTALL} {names}"
    if language in ("node", "typescript"):
        return f"npm install {NPM_FLAGS} --no-save {names}"
    raise InvalidRequest(f"packages are supported for python, node and typescript, not {language}")


def _runner(language: str, entry: str, files: dict[str, bytes]) -> tuple[str, dict[str, str]]:
    quoted = shlex.quote(entry)
    if language == "python":
        return f"python3 {quoted}", PY_ENV
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


def package_json(files: dict[str, bytes]) -> dict[str, Any]:
    """The project's package.json as an object ({} without one); 400 when it is not one."""
    if "package.json" not in files:
        return {}
    try:
        pkg = json.loads(files["package.json"])
    except ValueError as exc:
        raise InvalidRequest(f"package.json is not valid JSON: {exc}") from None
    if not isinstance(pkg, dict):
        raise InvalidRequest("package.json must hold a JSON object")
    return pkg

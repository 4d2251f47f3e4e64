"""Deploys: which runtime a project is, how it is built and started (tarballs: deploy_tarball).

Pure data: services/deploys.py writes the files into WORKDIR, runs `setup` and starts `command`.
Runtimes node, python, go, static, custom; when not given, detected from the files:
package.json → node, go.mod → go, requirements.txt / pyproject.toml / a top-level *.py → python,
index.html → static, a Procfile or an entrypoint alone → custom. An entrypoint is a start
command; one naming a file of the project runs that file with the runtime's interpreter.
"""

from __future__ import annotations

import contextlib
import posixpath
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from cove.domain.durations import utcnow
from cove.domain.errors import Conflict, InvalidRequest
from cove.domain.programs import (
    GO_ENV,
    NPM_FLAGS,
    PIP_INSTALL,
    PY_DEPS,
    PY_ENV,
    WORKDIR,
    clean_files,
    package_json,
)

RUNTIMES = ("node", "python", "go", "static", "custom")
DEFAULT_PORT = 3000  # the app's PORT when the sandbox declares none
APP_BINARY = ".cove-app"  # what `go build` writes in WORKDIR
MAX_ENTRYPOINT = 4096
_STATIC_ROOTS = ("", "public", "dist", "build", "site", "www")
_PY_MAINS = ("main.py", "app.py", "server.py", "__main__.py")
_NODE_MAINS = ("index.js", "server.js", "app.js", "main.js", "index.mjs", "server.mjs")


class NotDeployable(Conflict):
    code = "NOT_DEPLOYABLE"


class DeployStatus(StrEnum):
    BUILDING = "building"
    RUNNING = "running"
    FAILED = "failed"


@dataclass(frozen=True)
class Source:
    """What a deploy request carries: the project's files and the optional hints."""

    files: dict[str, bytes]
    runtime: str | None = None
    entrypoint: str | None = None
    executables: frozenset[str] = frozenset()  # written with mode 0755


@dataclass(frozen=True)
class Plan:
    runtime: str
    files: dict[str, bytes]
    executables: frozenset[str]
    setup: tuple[str, ...]  # shell commands in WORKDIR, each must succeed
    command: str  # the app, supervised
    env: dict[str, str]
    path: tuple[str, ...] = ()  # directories put in front of PATH (installed tools)


@dataclass
class Deployment:
    """The newest deploy of one sandbox."""

    runtime: str
    port: int
    status: DeployStatus = DeployStatus.BUILDING
    error: str | None = None
    url: str | None = None  # the app's preview URL once running
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None

    def running(self, url: str) -> None:
        self.status, self.url, self.finished_at = DeployStatus.RUNNING, url, utcnow()

    def fail(self, error: str) -> None:
        self.status, self.error, self.url = DeployStatus.FAILED, error, None
        self.finished_at = self.finished_at or utcnow()

    # Kept as the sandbox's "deploy" events (its record's own history), so a restart knows it.
    def event(self) -> tuple[str, str]:
        """(message, status) of the event recording this state."""
        head = f"deploy {self.runtime} port {self.port}"
        detail = {"building": "building", "running": "running", "failed": f"failed: {self.error}"}
        return f"{head} {detail[self.status.value]}", self.status.name


def from_events(events: list[dict[str, Any]]) -> Deployment | None:
    """The newest deploy recorded in a sandbox's events (see Deployment.event)."""
    for ev in reversed(events):
        if ev.get("type") != "deploy" or ev.get("status") not in DeployStatus.__members__:
            continue
        words = str(ev.get("message", "")).split(" ", 5)
        if len(words) < 5 or words[0] != "deploy" or not words[3].isdigit():
            return None
        dep = Deployment(words[1], int(words[3]), DeployStatus[ev["status"]])
        with contextlib.suppress(KeyError, TypeError, ValueError):
            dep.started_at = datetime.fromisoformat(ev["time"])  # of the newest state
        if dep.status == DeployStatus.FAILED:
            dep.error = str(ev["message"]).partition(" failed: ")[2] or "failed"
        return dep
    return None


# -- requests ----------------------------------------------------------------------------------


def json_source(body: dict[str, Any]) -> Source:
    """`{"files": {...}, "runtime"?, "entrypoint"?}` → Source (400 on anything malformed)."""
    unknown = set(body) - {"files", "runtime", "entrypoint"}
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    raw = body.get("files")
    if isinstance(raw, dict):  # "./x" → "x" here: clean_path would also strip a leading dot
        raw = {posixpath.normpath(k) if _dot_slash(k) else k: v for k, v in raw.items()}
    files = clean_files(raw)
    runtime, entry = body.get("runtime"), body.get("entrypoint")
    return Source(files, validate_runtime(runtime), validate_entrypoint(entry), scripts(files))


def _dot_slash(path: object) -> bool:
    return isinstance(path, str) and path.startswith("./")


def validate_runtime(runtime: object) -> str | None:
    if runtime is None or runtime == "":
        return None
    if runtime not in RUNTIMES:
        raise InvalidRequest(f"runtime {runtime!r} must be one of {', '.join(RUNTIMES)}")
    return str(runtime)


def validate_entrypoint(entry: object) -> str | None:
    if entry is None or entry == "":
        return None
    if not isinstance(entry, str) or not entry.strip() or "\0" in entry:
        raise InvalidRequest("entrypoint must be a non-empty start command")
    if len(entry) > MAX_ENTRYPOINT:
        raise InvalidRequest(f"entrypoint is longer than {MAX_ENTRYPOINT} characters")
    return entry.strip()


def scripts(files: dict[str, bytes]) -> frozenset[str]:
    """Files that run as programs: a shebang line or a .sh name."""
    return frozenset(p for p, data in files.items() if data.startswith(b"#!") or p.endswith(".sh"))


# -- plans -------------------------------------------------------------------------------------


def detect_runtime(files: dict[str, bytes]) -> str | None:
    if "package.json" in files:
        return "node"
    if "go.mod" in files:
        return "go"
    if "requirements.txt" in files or "pyproject.toml" in files:
        return "python"
    if any(p.endswith(".py") and "/" not in p for p in files):
        return "python"
    if _static_root(files) is not None:
        return "static"
    if "Procfile" in files:
        return "custom"
    return None


def plan(source: Source, port: int) -> Plan:
    """How to build and start `source` so that it serves on `port` (400 when it cannot tell)."""
    files = source.files
    runtime = source.runtime or detect_runtime(files) or ("custom" if source.entrypoint else None)
    if runtime is None:
        raise InvalidRequest(
            "cannot detect the runtime (no package.json, requirements.txt, pyproject.toml, *.py, "
            "go.mod, index.html or Procfile): give runtime and entrypoint"
        )
    entry = _entry_command(runtime, source.entrypoint, files) or _procfile(files)
    builder = {"node": _node, "python": _python, "go": _go, "static": _static, "custom": _custom}
    setup, command, env, path = builder[runtime](files, entry, port)
    execs = source.executables
    if source.entrypoint and _in(files, source.entrypoint):
        execs |= {posixpath.normpath(source.entrypoint)}
    env = {"PORT": str(port), **env}
    return Plan(runtime, files, frozenset(execs), tuple(setup), command, env, tuple(path))


Built = tuple[list[str], str, dict[str, str], list[str]]  # setup, command, env, PATH additions


def _node(files: dict[str, bytes], entry: str | None, port: int) -> Built:
    pkg = package_json(files)
    scripts = pkg.get("scripts") if isinstance(pkg.get("scripts"), dict) else {}
    setup = []
    if pkg.get("dependencies") or pkg.get("devDependencies"):
        lock = "package-lock.json" in files or "npm-shrinkwrap.json" in files
        setup.append(f"npm {'ci' if lock else 'install'} {NPM_FLAGS}")
    if isinstance(scripts.get("build"), str):
        setup.append("npm run build")
    command = entry
    if command is None and isinstance(scripts.get("start"), str):
        command = "npm start"
    main = pkg.get("main")
    if command is None and isinstance(main, str) and _in(files, main):
        command = f"node {shlex.quote(main)}"
    command = command or _first(files, _NODE_MAINS, "node")
    if command is None:
        raise InvalidRequest(
            "node: cannot tell how to start the app: add scripts.start to package.json, "
            f"one of {', '.join(_NODE_MAINS)}, or give an entrypoint"
        )
    env = {"NPM_CONFIG_UPDATE_NOTIFIER": "false", "NPM_CONFIG_FUND": "false"}
    return setup, command, env, [f"{WORKDIR}/node_modules/.bin"]


def _python(files: dict[str, bytes], entry: str | None, port: int) -> Built:
    setup = []
    if "requirements.txt" in files:
        setup.append(f"{PIP_INSTALL} -r requirements.txt")
    elif "pyproject.toml" in files:
        setup.append(f"{PIP_INSTALL} .")
    command = entry or _first(files, _PY_MAINS, "python3")
    tops = sorted(p for p in files if p.endswith(".py") and "/" not in p)
    if command is None and len(tops) == 1:
        command = f"python3 {shlex.quote(tops[0])}"
    if command is None:
        raise InvalidRequest(
            f"python: cannot tell how to start the app: add one of {', '.join(_PY_MAINS)}, "
            "or give an entrypoint"
        )
    env = dict(PY_ENV)
    return setup, command, env, [f"{PY_DEPS}/bin"]


def _go(files: dict[str, bytes], entry: str | None, port: int) -> Built:
    setup = [] if "go.mod" in files else ["go mod init app"]
    setup.append(f"go build -o {APP_BINARY} .")
    env = {
        **GO_ENV,
        "GOFLAGS": "-mod=mod",  # fetch what go.mod/go.sum do not pin yet
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",  # no C compiler in the image
    }
    return setup, entry or f"./{APP_BINARY}", env, []


def _static(files: dict[str, bytes], entry: str | None, port: int) -> Built:
    if entry:
        return [], entry, {}, []
    root = _static_root(files)
    if root is None:
        raise InvalidRequest("static: no index.html (at the top or in public/, dist/, build/)")
    where = f" --directory {shlex.quote(root)}" if root else ""
    return [], f"python3 -m http.server {port} --bind 0.0.0.0{where}", {}, []


def _custom(files: dict[str, bytes], entry: str | None, port: int) -> Built:
    if not entry:
        raise InvalidRequest("runtime custom needs an entrypoint (a start command) or a Procfile")
    return [], entry, {}, []


def _static_root(files: dict[str, bytes]) -> str | None:
    return next((r for r in _STATIC_ROOTS if posixpath.join(r, "index.html") in files), None)


def _entry_command(runtime: str, entry: str | None, files: dict[str, bytes]) -> str | None:
    """An entrypoint naming a project file runs it; anything else is a shell command."""
    if entry is None or not _in(files, entry):
        return entry
    quoted = shlex.quote(posixpath.normpath(entry))
    if runtime == "go" and entry.endswith(".go"):
        return None  # the built binary runs
    if runtime == "node" or entry.endswith((".js", ".mjs", ".cjs")):
        return f"node {quoted}"
    if runtime == "python" or entry.endswith(".py"):
        return f"python3 {quoted}"
    return f"./{quoted}"


def _procfile(files: dict[str, bytes]) -> str | None:
    """The `web:` command of a Procfile (else its first one)."""
    commands = {}
    for line in files.get("Procfile", b"").decode(errors="replace").splitlines():
        kind, sep, command = line.partition(":")
        if sep and kind.strip() and command.strip() and not line.startswith("#"):
            commands.setdefault(kind.strip(), command.strip())
    return commands.get("web") or next(iter(commands.values()), None)


def _first(files: dict[str, bytes], names: tuple[str, ...], runner: str) -> str | None:
    found = next((n for n in names if n in files), None)
    return f"{runner} {found}" if found else None


def _in(files: dict[str, bytes], path: str) -> bool:
    try:
        return posixpath.normpath(path) in files and " " not in path
    except (TypeError, ValueError):
        return False

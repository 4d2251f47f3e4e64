"""What a job runs: its runtime (given or detected from the files) and the Program of a task.

Jobs run to completion, so this differs from deploys (domain/deploy.py: servers on a port):
more runtimes (typescript, bash, ruby), entry files or a command, installs per task.
"""

from __future__ import annotations

import tomllib
from dataclasses import replace

from cove.domain.errors import InvalidRequest
from cove.domain.programs import (
    GO_ENV,
    NPM_FLAGS,
    PIP_INSTALL,
    PY_ENV,
    Program,
    clean_path,
    code_program,
    install_step,
    package_json,
)

RUNTIMES = ("python", "node", "typescript", "bash", "ruby", "go", "custom")

_EXT = {
    ".py": "python",
    ".js": "node",
    ".mjs": "node",
    ".cjs": "node",
    ".ts": "typescript",
    ".sh": "bash",
    ".rb": "ruby",
    ".go": "go",
}
_ENTRIES = {
    "python": ("main.py", "src/main.py", "app.py", "job.py", "index.py", "__main__.py"),
    "node": ("index.js", "src/index.js", "main.js", "app.js", "index.mjs"),
    "typescript": ("index.ts", "src/index.ts", "main.ts"),
    "bash": ("main.sh", "run.sh", "job.sh", "entrypoint.sh"),
    "ruby": ("main.rb", "app.rb"),
    "go": ("main.go",),
}
_ENV = {"python": PY_ENV, "go": GO_ENV}  # for entrypoints given as commands


def detect_runtime(files: dict[str, bytes], entrypoint: str | None) -> str:
    """From the entrypoint's extension, then marker files, then the usual entry file names."""
    if entrypoint and entrypoint in files and _ext(entrypoint) in _EXT:
        return _EXT[_ext(entrypoint)]
    if "package.json" in files:
        return "node"
    if {"requirements.txt", "pyproject.toml", "setup.py"} & files.keys():
        return "python"
    if "go.mod" in files:
        return "go"
    for runtime, names in _ENTRIES.items():
        if any(n in files for n in names):
            return runtime
    kinds = {_EXT[_ext(p)] for p in files if _ext(p) in _EXT}
    if len(kinds) == 1:
        return kinds.pop()
    raise InvalidRequest(
        "cannot tell the runtime from the files: give runtime "
        f"({', '.join(RUNTIMES)}) and, if needed, entrypoint"
    )


def job_program(runtime: str, entrypoint: str | None, files: dict[str, bytes]) -> Program:
    """Dependencies to install (each task does) + the command that runs the job."""
    if runtime not in RUNTIMES:
        raise InvalidRequest(f"runtime must be one of {', '.join(RUNTIMES)}")
    setup = _dependencies(runtime, files)
    entry = _file_entry(entrypoint, files)
    if entrypoint and entry is None and _looks_like_file(entrypoint):
        raise InvalidRequest(f"entrypoint {entrypoint!r} is not among the files")
    if entrypoint and entry is None:  # a command, e.g. "python3 main.py --fast"
        return Program(files, setup, entrypoint, dict(_ENV.get(runtime, {})))
    if runtime == "custom":
        raise InvalidRequest("runtime custom needs an entrypoint command")
    entry = entry or _default_entry(runtime, files)
    scripts = package_json(files).get("scripts")
    if entry is None and runtime == "node" and isinstance(scripts, dict) and scripts.get("start"):
        return Program(files, _npm_install(files, dev=True), "npm run --silent start", {})
    if entry is None:
        raise InvalidRequest(
            f"no entry file for runtime {runtime} (looked for {', '.join(_ENTRIES[runtime])}): "
            "give entrypoint"
        )
    language = _EXT.get(_ext(entry), runtime) if runtime in ("node", "typescript") else runtime
    base = code_program(language, None, files, entry, [])
    return replace(base, setup=setup)


def _file_entry(entrypoint: str | None, files: dict[str, bytes]) -> str | None:
    if not entrypoint or " " in entrypoint.strip():
        return None
    try:
        path = clean_path(entrypoint, "entrypoint")
    except InvalidRequest:
        return None
    return path if path in files else None


def _looks_like_file(entrypoint: str) -> bool:
    text = entrypoint.strip()
    return not any(c.isspace() for c in text) and _ext(text) in _EXT


def _default_entry(runtime: str, files: dict[str, bytes]) -> str | None:
    if runtime == "node":
        main = package_json(files).get("main")
        if isinstance(main, str) and main.strip():
            try:
                path = clean_path(main, "package.json main")
            except InvalidRequest:
                return None
            if path in files:
                return path
    return next((n for n in _ENTRIES[runtime] if n in files), None)


def _dependencies(runtime: str, files: dict[str, bytes]) -> tuple[str, ...]:
    if runtime == "python" and "requirements.txt" in files:
        return (f"{PIP_INSTALL} -r requirements.txt",)
    if runtime == "python" and "pyproject.toml" in files:
        deps = _pyproject_deps(files["pyproject.toml"])
        return (install_step("python", deps),) if deps else ()
    if runtime in ("node", "typescript"):
        return _npm_install(files, dev=False)
    return ()


def _npm_install(files: dict[str, bytes], dev: bool) -> tuple[str, ...]:
    pkg = package_json(files)
    wanted = bool(pkg.get("dependencies")) or (dev and bool(pkg.get("devDependencies")))
    if not wanted:
        return ()
    omit = "" if dev else " --omit=dev"
    return (f"npm install {NPM_FLAGS}{omit}",)


def _pyproject_deps(raw: bytes) -> list[str]:
    try:
        deps = tomllib.loads(raw.decode()).get("project", {}).get("dependencies", [])
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("pyproject.toml is not valid TOML") from None
    return [d for d in deps if isinstance(d, str)]


def _ext(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name[name.rfind(".") :] if "." in name else ""

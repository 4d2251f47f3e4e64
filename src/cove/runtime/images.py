"""Local images: public names → one Debian-based EROFS image, built on first need.

The image is a read-only EROFS file shared by every sandbox (mounted once per server, straight from
the file: no loop device); each sandbox gets a private tmpfs upper layer on top (see mounts.py).
It carries the interpreters of every run language (domain/programs.py): python3 + pip, node + npm +
the TypeScript compiler, bash, ruby, go. Its file name holds a key of its recipe, so a changed
recipe builds a new image next to the old one (servers keep the file they mounted).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cove.config import Settings
from cove.runtime.base import RuntimeError_, UnknownImage

BASE = "base"

# Every public name we accept maps to the single local image "base" (python3 + node + git + curl).
_ALIASES = ("blaxel/base-image", "blaxel/py-app", "blaxel/ts-app", "blaxel/node")
PUBLIC_NAMES = tuple(f"{name}:latest" for name in _ALIASES)

# debootstrap's own resolver cannot install npm (virtual packages / alternatives), so it only gets
# the simple packages and apt-get inside the chroot installs the rest afterwards.
DEBOOTSTRAP_INCLUDE = "procps,python3,git,curl,ca-certificates"
APT_EXTRA = ("nodejs", "npm", "python3-pip", "ruby", "golang-go", "node-typescript")
SUITE = "bookworm"
# Bump when the build steps change in a way the lists above do not show (part of the image key).
REVISION = 2

# Runs TypeScript (domain/programs.py names this path): every .ts file is transpiled when it is
# required (types erased, no type check), so imports of other .ts files work; inline source maps
# keep stack traces on the .ts lines. A typescript the run installed itself wins over the image's.
# The image's typescript.js (10 MB) loads from a V8 code cache made at build time
# (`--build-cache`): about 0.2 s less per run; a rejected cache only costs that time back.
TS_RUNNER_PATH = "usr/local/lib/cove/ts-run.js"
TS_RUNNER = """\
"use strict";
const fs = require("fs");
const path = require("path");
const vm = require("vm");
const Module = require("module");

const IMAGE_TS = "/usr/share/nodejs/typescript/lib/typescript.js";
const CACHE = path.join(__dirname, "typescript.cache"); // V8 code cache, made with the image

function imageTypescript(cachedData) {
  const source = Module.wrap(fs.readFileSync(IMAGE_TS, "utf8"));
  const script = new vm.Script(source, { filename: IMAGE_TS, cachedData });
  const module = { exports: {} };
  script.runInThisContext()(module.exports, require, module, IMAGE_TS, path.dirname(IMAGE_TS));
  return { ts: module.exports, script };
}

function typescript() {
  let own = null;
  try {
    own = fs.realpathSync(require.resolve("typescript", { paths: [process.cwd()] }));
  } catch (err) {} // none installed by the run: the image's
  if (own && own !== IMAGE_TS) return require(own);
  return imageTypescript(fs.existsSync(CACHE) ? fs.readFileSync(CACHE) : undefined).ts;
}

function options(ts) {
  return {
    module: ts.ModuleKind.CommonJS,
    target: ts.ScriptTarget.ES2022,
    esModuleInterop: true,
    jsx: ts.JsxEmit.React,
    inlineSourceMap: true,
  };
}

if (process.argv[2] === "--build-cache") {
  const { ts, script } = imageTypescript(undefined);
  ts.transpileModule("export const one: number = 1;", { compilerOptions: options(ts) });
  fs.writeFileSync(CACHE, script.createCachedData());
  return;
}
const ts = typescript();
const compilerOptions = options(ts);
function compile(module, fileName) {
  const source = fs.readFileSync(fileName, "utf8");
  module._compile(ts.transpileModule(source, { compilerOptions, fileName }).outputText, fileName);
}
for (const ext of [".ts", ".tsx", ".mts", ".cts"]) require.extensions[ext] = compile;
const entry = path.resolve(process.argv[2]);
process.argv.splice(1, 2, entry); // the program sees itself as argv[1]
require(entry);
"""

# Dropped from the image (relative to its root; globs): documentation, the Go toolchain's own
# sources, tests and compiler internals (user programs link only the precompiled std), and the
# TypeScript language-server bundles (runs only transpile). About a third of what they add.
SLIM_GLOBS = (
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*/",
    "usr/lib/go-*/pkg/*/cmd",
    "usr/share/go-*/test",
    "usr/share/go-*/src/cmd",
    "usr/share/nodejs/typescript/lib/tsserver*.js",
    "usr/share/nodejs/typescript/lib/typingsInstaller.js",
    "usr/share/nodejs/typescript/lib/typescriptServices.js",
)


def recipe_key() -> str:
    """Changes whenever what goes into the image changes: old installs then rebuild."""
    recipe = "\n".join((SUITE, DEBOOTSTRAP_INCLUDE, *APT_EXTRA, str(REVISION), TS_RUNNER))
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def resolve_image(image: str) -> str:
    """Public image name → local image id, or UnknownImage with the names that exist."""
    name = image.strip()
    if name == BASE:
        return BASE
    repo, _, tag = name.partition(":")
    if repo in _ALIASES and tag in ("", "latest"):
        return BASE
    raise UnknownImage(f"image {image!r} is not available; available: {', '.join(PUBLIC_NAMES)}")


def image_path(settings: Settings, local: str) -> Path:
    return settings.images_dir / f"{local}-{recipe_key()}.erofs"


def mount_dir(settings: Settings, local: str) -> Path:
    """Where the server mounts the image read-only (one mount per server, shared by sandboxes)."""
    return settings.run_dir.parent / "images-mnt" / local


def ensure_image(settings: Settings, local: str = BASE, log=None) -> Path:
    """Build images_dir/<local>.erofs if missing (blocking; minutes on first run). Returns its path.

    A file lock serialises builders across processes; the result appears atomically via rename.
    """
    if local != BASE:
        raise UnknownImage(
            f"image {local!r} is not available; available: {', '.join(PUBLIC_NAMES)}"
        )
    out = image_path(settings, local)
    if out.exists():
        return out
    settings.images_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.images_dir / f".{local}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building: wait for it
        if out.exists():
            return out
        _build_base(settings.images_dir, out, log or _stderr_log)
        _remove_older(settings.images_dir, local, out)
    return out


def _remove_older(images_dir: Path, local: str, keep: Path) -> None:
    """Images of older recipes. A server that mounted one keeps it: the mount holds the file."""
    for old in (*images_dir.glob(f"{local}.erofs"), *images_dir.glob(f"{local}-*.erofs")):
        if old != keep:
            old.unlink(missing_ok=True)


def _stderr_log(msg: str) -> None:
    print(f"cove: {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise RuntimeError_(
            f"building image failed at {what} (rc={proc.returncode}):\n" + "\n".join(tail)
        )


def _build_base(images_dir: Path, out: Path, log) -> None:
    for tool in ("debootstrap", "mkfs.erofs", "chroot"):
        if shutil.which(tool) is None:
            raise RuntimeError_(
                f"cove needs {tool} to build the base image (apt-get install "
                f"{'erofs-utils' if tool == 'mkfs.erofs' else tool})"
            )
    tmp_root = images_dir / f"{out.stem}.rootfs.tmp"
    tmp_img = images_dir / f"{out.name}.tmp"
    shutil.rmtree(tmp_root, ignore_errors=True)
    tmp_img.unlink(missing_ok=True)
    started = time.monotonic()
    try:
        log(f"building image '{out.stem}' with debootstrap (takes two or three minutes, once)")
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={DEBOOTSTRAP_INCLUDE}",
                SUITE,
                str(tmp_root),
            ],
            "debootstrap",
        )
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "DEBIAN_FRONTEND": "noninteractive",
            "LANG": "C.UTF-8",
            "HOME": "/root",
        }
        log(f"installing {' '.join(APT_EXTRA)}")
        _run(
            [
                "chroot",
                str(tmp_root),
                "apt-get",
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                *APT_EXTRA,
            ],
            "apt-get install",
            env,
        )
        _run(["chroot", str(tmp_root), "apt-get", "clean"], "apt-get clean", env)
        _slim(tmp_root)
        _add_ts_runner(tmp_root, env)
        log("writing EROFS image")
        _run(["mkfs.erofs", "-zlz4hc", str(tmp_img), str(tmp_root)], "mkfs.erofs")
        os.replace(tmp_img, out)
        log(
            f"image ready: {out} ({out.stat().st_size // 2**20} MiB, "
            f"{time.monotonic() - started:.0f} s)"
        )
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
        tmp_img.unlink(missing_ok=True)


def _slim(root: Path) -> None:
    """Drop apt caches/lists and what runs never use (SLIM_GLOBS), and make the mount point for
    the zygote (/.cove) part of the image."""
    for rel in ("var/lib/apt/lists", "var/cache/apt", "var/cache/debconf/templates.dat-old"):
        target = root / rel
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        elif target.exists():
            target.unlink()
    shutil.rmtree(root / "debootstrap", ignore_errors=True)
    for pattern in SLIM_GLOBS:
        for path in root.glob(pattern):
            _remove(path)
    _drop_go_tests(root)
    for doc in (root / "usr/share/doc").rglob("*"):
        if doc.is_file() and doc.name != "copyright":  # licences stay
            doc.unlink()
    (root / ".cove").mkdir(mode=0o755, exist_ok=True)
    # The sandbox has no network; an empty resolv.conf avoids leaking the host's resolver config.
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    resolv.write_text("")


def _add_ts_runner(root: Path, env: dict[str, str]) -> None:
    runner = root / TS_RUNNER_PATH
    runner.parent.mkdir(parents=True, exist_ok=True)
    runner.write_text(TS_RUNNER)
    cmd = ["chroot", str(root), "/usr/bin/node", f"/{TS_RUNNER_PATH}", "--build-cache"]
    _run(cmd, "typescript code cache", env)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _drop_go_tests(root: Path) -> None:
    """Test files and test data of Go's std sources (not part of any package build)."""
    for src in root.glob("usr/share/go-*/src"):
        for dirpath, dirnames, filenames in os.walk(src):
            for name in [d for d in dirnames if d == "testdata"]:
                shutil.rmtree(Path(dirpath, name), ignore_errors=True)
                dirnames.remove(name)
            for name in filenames:
                if name.endswith("_test.go"):
                    Path(dirpath, name).unlink()


if __name__ == "__main__":  # python -m cove.runtime.images  → build the base image now
    print(ensure_image(Settings.from_env()))

"""Local images: public names → one Debian-based EROFS image, built on first need.

The image is a read-only EROFS file shared by every sandbox (mounted once per server, straight from
the file: no loop device); each sandbox gets a private tmpfs upper layer on top (see mounts.py).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cove.config import Settings
from cove.runtime.base import RuntimeError_, UnknownImage

BASE = "base"

# Every public name we accept maps to the single local image "base" (python3 + node + git + curl).
_ALIASES = ("blaxel/base-image", "blaxel/py-app", "blaxel/ts-app", "blaxel/node")
PUBLIC_NAMES = tuple(f"{name}:latest" for name in _ALIASES)

# debootstrap's own resolver cannot install npm (virtual packages / alternatives), so it only gets
# the simple packages and apt-get inside the chroot installs node + npm afterwards.
DEBOOTSTRAP_INCLUDE = "procps,python3,git,curl,ca-certificates"
APT_EXTRA = ("nodejs", "npm")
SUITE = "bookworm"


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
    return settings.images_dir / f"{local}.erofs"


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
    return out


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
    try:
        log(f"building image '{out.stem}' with debootstrap (takes a minute or two, once)")
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
        log("installing nodejs and npm")
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
        log("writing EROFS image")
        _run(["mkfs.erofs", "-zlz4hc", str(tmp_img), str(tmp_root)], "mkfs.erofs")
        os.replace(tmp_img, out)
        log(f"image ready: {out} ({out.stat().st_size // 2**20} MiB)")
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
        tmp_img.unlink(missing_ok=True)


def _slim(root: Path) -> None:
    """Drop apt caches/lists and make the mount point for the zygote (/.cove) part of the image."""
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
    (root / ".cove").mkdir(mode=0o755, exist_ok=True)
    # The sandbox has no network; an empty resolv.conf avoids leaking the host's resolver config.
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    resolv.write_text("")


if __name__ == "__main__":  # python -m cove.runtime.images  → build the base image now
    print(ensure_image(Settings.from_env()))

"""A deploy's tarball: a gzip-compressed tar → the project's files (services never unpack).

Only regular files, directories and links to files in the archive; no absolute names, no `..`,
no devices or FIFOs; bounded entry count and unpacked size. Links become copies of their
target, so nothing written into the sandbox is a link.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
import zlib

from cove.domain.deploy import Source, scripts, validate_entrypoint, validate_runtime
from cove.domain.errors import InvalidRequest
from cove.domain.programs import clean_path

MAX_TAR_FILES = 10_000
MAX_TAR_BYTES = 200 * 1024 * 1024  # unpacked; the compressed body is capped by the API


def tarball_source(data: bytes, runtime: object, entrypoint: object) -> Source:
    """One directory holding everything (`tar czf app.tgz app/`) is the project root."""
    files, execs, links = _unpack(data)
    while links:  # a link to a link resolves once its target has
        done = {n: t for n, t in links.items() if t in files}
        if not done:
            name = next(iter(links))
            raise InvalidRequest(f"tarball: link {name!r} must point to a file in the archive")
        for name, target in done.items():
            files[name] = files[target]
            del links[name]
    if not files:
        raise InvalidRequest("tarball: the archive holds no files")
    if sum(len(d) for d in files.values()) > MAX_TAR_BYTES:  # links count as copies
        raise InvalidRequest(f"tarball: more than {MAX_TAR_BYTES} bytes unpacked")
    files, kept = _strip_top(files, frozenset(execs) | scripts(files))
    return Source(files, validate_runtime(runtime), validate_entrypoint(entrypoint), kept)


def _unpack(data: bytes) -> tuple[dict[str, bytes], set[str], dict[str, str]]:
    files: dict[str, bytes] = {}
    execs: set[str] = set()
    links: dict[str, str] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for count, member in enumerate(tar, 1):
                if count > MAX_TAR_FILES:
                    raise InvalidRequest(f"tarball: more than {MAX_TAR_FILES} entries")
                name = _member_path(member.name)
                if member.isdir():
                    continue
                if name == ".":
                    raise InvalidRequest(f"tarball: {member.name!r} is not a file name")
                if member.issym() or member.islnk():
                    links[name] = _link_target(name, member)
                    continue
                if not member.isreg():
                    raise InvalidRequest(
                        f"tarball: {member.name!r} is a device or FIFO; only regular files, "
                        "directories and links to files in the archive are allowed"
                    )
                total += member.size
                if total > MAX_TAR_BYTES:
                    raise InvalidRequest(f"tarball: more than {MAX_TAR_BYTES} bytes unpacked")
                handle = tar.extractfile(member)
                files[name] = handle.read() if handle else b""
                if member.mode & 0o111:
                    execs.add(name)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise InvalidRequest(f"body is not a readable gzip-compressed tar archive: {exc}") from None
    return files, execs, links


def _member_path(name: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise InvalidRequest(f"tarball: {name!r} is outside the project (absolute or '..')")
    if not parts:
        return "."  # the archive's own root directory entry
    return clean_path("/".join(parts), "tarball")


def _link_target(name: str, member: tarfile.TarInfo) -> str:
    """The archive path a link stands for; anything leaving the project is refused."""
    target = member.linkname
    if member.issym():
        target = posixpath.join(posixpath.dirname(name), target)
    norm = posixpath.normpath(target)
    if member.linkname.startswith("/") or norm == ".." or norm.startswith("../"):
        raise InvalidRequest(f"tarball: link {name!r} → {member.linkname!r} points outside")
    return norm


def _strip_top(
    files: dict[str, bytes], execs: frozenset[str]
) -> tuple[dict[str, bytes], frozenset[str]]:
    tops = {p.split("/", 1)[0] for p in files}
    if len(tops) != 1 or any("/" not in p for p in files):
        return files, execs
    cut = len(tops.pop()) + 1
    return {p[cut:]: d for p, d in files.items()}, frozenset(p[cut:] for p in execs if "/" in p)

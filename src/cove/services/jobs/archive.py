"""A job's code as an upload: zip or (gzipped) tar → the same `{path: bytes}` map as JSON files.

Nothing touches a disk: members are read in memory under caps. Refused with a 400: absolute
paths, `..`, backslashes, links (symbolic and hard), devices, FIFOs, encrypted zip entries,
duplicate names, more than MAX_FILES files, more than MAX_FILES_BYTES unpacked (checked while
reading, so a bomb stops at the cap). A single top-level directory shared by every file is
stripped (`tar czf job.tgz myjob/`).
"""

from __future__ import annotations

import functools
import io
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from typing import IO

from cove.domain.errors import InvalidRequest
from cove.domain.programs import MAX_FILES, MAX_FILES_BYTES, clean_path

MAX_UPLOAD_BYTES = MAX_FILES_BYTES  # the compressed body
ZIP_TYPES = ("application/zip", "application/x-zip-compressed")
TAR_TYPES = {
    "application/x-tar+gzip": "r:gz",
    "application/gzip": "r:gz",
    "application/x-gzip": "r:gz",
    "application/x-gtar": "r:gz",
    "application/tar+gzip": "r:gz",
    "application/x-compressed-tar": "r:gz",
    "application/x-tar": "r:",
}
_MAX_MEMBERS = 4 * MAX_FILES  # directories count too: a header bomb stops here


def media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def is_archive(content_type: str) -> bool:
    kind = media_type(content_type)
    return kind in ZIP_TYPES or kind in TAR_TYPES


def extract(body: bytes, content_type: str) -> dict[str, bytes]:
    kind = media_type(content_type)
    if kind in ZIP_TYPES:
        members = _zip_members(body)
    elif kind in TAR_TYPES:
        members = _tar_members(body, TAR_TYPES[kind])
    else:
        raise InvalidRequest(f"unsupported upload type {kind!r}")
    files: dict[str, bytes] = {}
    total = 0
    for name, opener in members:
        path = _safe_name(name)
        if path in files:
            raise InvalidRequest(f"upload: {name!r} appears twice")
        if len(files) >= MAX_FILES:
            raise InvalidRequest(f"upload: more than {MAX_FILES} files")
        data = _read(opener, MAX_FILES_BYTES - total)
        total += len(data)
        files[path] = data
    if not files:
        raise InvalidRequest("upload: the archive holds no files")
    return _strip_common_dir(files)


Opener = Callable[[], IO[bytes] | None]


def _read(opener: Opener, budget: int) -> bytes:
    """One member's bytes, refusing (400) once they pass `budget`."""
    stream = opener()
    if stream is None:
        return b""
    with stream:
        data = stream.read(budget + 1)
    if len(data) > budget:
        raise InvalidRequest(f"upload: unpacked files exceed {MAX_FILES_BYTES} bytes")
    return data


def _zip_members(body: bytes) -> Iterator[tuple[str, Opener]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError) as exc:
        raise InvalidRequest(f"upload is not a valid zip file: {exc}") from None
    if len(infos) > _MAX_MEMBERS:
        raise InvalidRequest(f"upload: more than {_MAX_MEMBERS} entries")
    for info in infos:
        mode = info.external_attr >> 16
        if info.is_dir() or stat.S_ISDIR(mode):
            continue
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # 0: no type recorded (plain file)
            raise InvalidRequest(f"upload: {info.filename!r} is a link or special file")
        if info.flag_bits & 0x1:
            raise InvalidRequest(f"upload: {info.filename!r} is encrypted")
        yield info.filename, functools.partial(archive.open, info)


def _tar_members(body: bytes, mode: str) -> Iterator[tuple[str, Opener]]:
    try:
        archive = tarfile.open(fileobj=io.BytesIO(body), mode=mode)  # noqa: SIM115
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidRequest(f"upload is not a valid tar archive: {exc}") from None
    seen = 0
    try:
        while True:
            member = archive.next()
            if member is None:
                return
            seen += 1
            if seen > _MAX_MEMBERS:
                raise InvalidRequest(f"upload: more than {_MAX_MEMBERS} entries")
            if member.isdir():
                continue
            if not member.isreg():  # symlink, hard link, device, FIFO
                raise InvalidRequest(f"upload: {member.name!r} is a link or special file")
            yield member.name, functools.partial(archive.extractfile, member)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidRequest(f"upload is not a valid tar archive: {exc}") from None


def _safe_name(name: str) -> str:
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or ".." in parts or "\0" in name:
        raise InvalidRequest(f"upload: {name!r} must be a relative path inside the project")
    return clean_path(name, "upload")


def _strip_common_dir(files: dict[str, bytes]) -> dict[str, bytes]:
    tops = {p.split("/", 1)[0] for p in files}
    if len(tops) != 1 or any("/" not in p for p in files):
        return files
    return {p.split("/", 1)[1]: data for p, data in files.items()}

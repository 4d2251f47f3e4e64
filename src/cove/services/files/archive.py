"""A directory as a tar.gz stream, produced chunk by chunk (never the whole archive in memory).

A plain generator: the HTTP layer iterates it in a worker thread, so each chunk is read and
compressed off the event loop and a slow client simply stops pulling (backpressure).
Member names come from the confined walk: relative, never containing '..'.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zlib
from collections.abc import Iterator

from cove.services.files.core import SandboxFiles
from cove.services.files.rooted import normalize
from cove.services.files.tree import Filter, Node, open_child_regular, walk

BLOCK = 512
CHUNK = 1 << 20


def tar_gz(files: SandboxFiles, path: str) -> Iterator[bytes]:
    path = normalize(path)
    top = files.rooted.open_dir(path)  # raises 404 before the response starts
    return _stream(top, path)


def _stream(top: int, path: str) -> Iterator[bytes]:
    gz = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: gzip framing
    base = (path.rsplit("/", 1)[-1] or "root") + "/"
    try:
        for node in walk(top, "", Filter()):
            for raw in _member(node, base + node.path.lstrip("/")):
                if out := gz.compress(raw):
                    yield out
        yield gz.compress(b"\0" * (2 * BLOCK)) + gz.flush()
    finally:
        os.close(top)


def _member(node: Node, name: str) -> Iterator[bytes]:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(node.st.st_mode)
    info.mtime = int(node.st.st_mtime)
    info.uid, info.gid = node.st.st_uid, node.st.st_gid
    if node.is_dir:
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(node.st.st_mode):
        info.type = tarfile.SYMTYPE
        try:
            info.linkname = os.readlink(node.name, dir_fd=node.parent_fd)
        except OSError:
            return
    elif stat.S_ISREG(node.st.st_mode):
        yield from _file_member(node, info)
        return
    else:
        return  # FIFOs, sockets, devices are left out
    yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _file_member(node: Node, info: tarfile.TarInfo) -> Iterator[bytes]:
    fd = open_child_regular(node)
    if fd is None:
        return
    try:
        size = os.fstat(fd).st_size
        info.size = size
        yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        left = size
        while left > 0:  # exactly `size` bytes, even if the file changes meanwhile
            chunk = os.read(fd, min(CHUNK, left)) or b"\0" * min(CHUNK, left)
            left -= len(chunk)
            yield chunk
        if size % BLOCK:
            yield b"\0" * (BLOCK - size % BLOCK)
    finally:
        os.close(fd)

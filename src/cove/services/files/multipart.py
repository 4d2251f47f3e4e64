"""Multipart uploads (initiate / part / complete / abort), parts streamed to disk.

Parts live inside the sandbox itself (SPOOL below its root), so a 1 GiB upload is bounded by
the sandbox's own disk quota and never fills the host; they vanish with the sandbox. The
bookkeeping is in memory: an upload does not survive a cove restart.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cove.domain.errors import InvalidRequest, LimitExceeded, NotFound
from cove.services.files.core import SandboxFiles
from cove.services.files.rooted import copy_fd, normalize, os_error
from cove.services.files.stream import StreamWriter, write_stream

SPOOL = "/tmp/.cove-multipart"
MAX_UPLOADS = 64
MAX_PART_NUMBER = 10_000


@dataclass
class Part:
    number: int
    etag: str
    size: int
    uploaded_at: str


@dataclass
class Upload:
    id: str
    path: str
    permissions: int
    initiated_at: str
    parts: dict[int, Part] = field(default_factory=dict)

    @property
    def spool(self) -> str:
        return f"{SPOOL}/{self.id}"


def _uploads(files: SandboxFiles) -> dict[str, Upload]:
    return files.uploads  # type: ignore[return-value]


def get(files: SandboxFiles, upload_id: str) -> Upload:
    upload = _uploads(files).get(upload_id)
    if upload is None:
        raise NotFound(f"upload {upload_id!r} not found")
    return upload


def list_uploads(files: SandboxFiles) -> list[Upload]:
    return list(_uploads(files).values())


async def initiate(files: SandboxFiles, path: str, permissions: int) -> Upload:
    path = normalize(path)
    if path == "/":
        raise InvalidRequest("cannot upload to /")
    if len(_uploads(files)) >= MAX_UPLOADS:
        raise LimitExceeded(f"at most {MAX_UPLOADS} multipart uploads may be in flight")
    upload = Upload(secrets.token_hex(16), path, permissions, _now())
    await files.rooted.run(files.rooted.mkdirs, upload.spool, 0o700)
    _uploads(files)[upload.id] = upload
    return upload


async def put_part(
    files: SandboxFiles, upload: Upload, number: int, body: AsyncIterator[bytes]
) -> Part:
    if not 1 <= number <= MAX_PART_NUMBER:
        raise InvalidRequest(f"partNumber must be from 1 to {MAX_PART_NUMBER}")
    writer = await write_stream(
        files.rooted, f"{upload.spool}/{number}", body, lambda: 0o600, checksum=True
    )
    part = Part(number, f"{writer.crc:08x}-{writer.size:x}", writer.size, _now())
    upload.parts[number] = part
    return part


async def complete(
    files: SandboxFiles, upload: Upload, wanted: list[tuple[int, str | None]]
) -> str:
    """Concatenate the listed parts (all parts when none listed) into the target."""
    numbers = [n for n, _ in wanted] or sorted(upload.parts)
    if not numbers:
        raise InvalidRequest("no parts were uploaded")
    for number, etag in wanted:
        part = upload.parts.get(number)
        if part is None:
            raise InvalidRequest(f"part {number} was not uploaded")
        if etag and etag.strip('"') != part.etag:
            raise InvalidRequest(f"part {number}: etag {etag!r} does not match")
    writer = await StreamWriter.open(files.rooted, upload.path)
    try:
        await files.rooted.run(_concat, files, upload, sorted(set(numbers)), writer)
        await writer.commit(upload.permissions)
    except BaseException:
        await writer.abort()
        raise
    await abort(files, upload)
    return upload.path


def _concat(files: SandboxFiles, upload: Upload, numbers: list[int], writer: StreamWriter) -> None:
    for number in numbers:
        fd, _st = files.rooted.open_regular(f"{upload.spool}/{number}")
        try:
            copy_fd(fd, writer._fd)  # noqa: SLF001 - same package, avoids a copy through Python
        except OSError as exc:
            raise os_error(upload.path, exc) from None
        finally:
            os.close(fd)


async def abort(files: SandboxFiles, upload: Upload) -> None:
    _uploads(files).pop(upload.id, None)
    await files.rooted.run(_remove_spool, files, upload)


def _remove_spool(files: SandboxFiles, upload: Upload) -> None:
    with contextlib.suppress(Exception):
        dfd, name = files.rooted.parent(upload.spool)
        try:
            shutil.rmtree(name, dir_fd=dfd)
        finally:
            os.close(dfd)


def _now() -> str:
    return datetime.now(UTC).isoformat()

"""A process's output: bounded buffers for reads, and a bounded journal for live followers.

Overflow rule: every buffer keeps its newest bytes. stdout, stderr and the combined `logs` keep
LOG_LIMIT (4 MiB) each, so a chatty process never grows the server's memory and the end of the
output is always there; get/list show the last VIEW_LIMIT (64 KiB) of each, /logs all of it.
The journal (what log streams replay on attach, then follow) keeps the newest JOURNAL_LIMIT
bytes of chunks; a follower slower than the process skips what was dropped and is told so.
Followers never block the process: they read at their own pace from the journal.
Finished processes share a sandbox-wide budget (manager.FINISHED_OUTPUT_LIMIT): past it, the
oldest finished ones lose their output (status and exit code stay).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque

LOG_LIMIT = 4 * 1024 * 1024
VIEW_LIMIT = 64 * 1024
JOURNAL_LIMIT = 4 * 1024 * 1024
ENTRY_OVERHEAD = 128  # what one journal entry costs besides its bytes: tiny writes count too


class LogBuffer:
    """The newest `limit` bytes of a stream. Chunks are kept as written (shared with the
    journal and the other buffers) and dropped whole from the front, so appending costs
    O(chunk) however full the buffer is: a flooding process cannot turn each 64 KiB read
    into a 4 MiB memmove on the event loop."""

    def __init__(self, limit: int = LOG_LIMIT) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0  # bytes in _chunks, including the _skip bytes of the first one
        self._skip = 0  # bytes of _chunks[0] already dropped
        self._limit = limit

    def append(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        while self._size - len(self._chunks[0]) >= self._limit:
            self._size -= len(self._chunks.popleft())
            self._skip = 0
        self._skip = max(self._skip, self._size - self._limit)

    def text(self, tail: int | None = None) -> str:
        want = len(self) if tail is None else min(tail, len(self))
        picked: list[bytes] = []
        got = 0
        for chunk in reversed(self._chunks):
            if got >= want:
                break
            picked.append(chunk)
            got += len(chunk)
        data = b"".join(reversed(picked))
        return _decode(data[len(data) - want :] if want else b"")

    def __len__(self) -> int:
        return self._size - self._skip


def _decode(data: bytes) -> str:
    # A cut at the front may split a UTF-8 sequence: drop its continuation bytes, not a "?".
    start = 0
    while start < min(3, len(data)) and data[start] & 0xC0 == 0x80:
        start += 1
    return data[start:].decode("utf-8", errors="replace")


class Output:
    def __init__(self) -> None:
        self.stdout = LogBuffer()
        self.stderr = LogBuffer()
        self.logs = LogBuffer()
        self._journal: deque[tuple[str, bytes]] = deque()
        self._first = 0  # absolute index of _journal[0]
        self._bytes = 0
        self.closed = False
        self._wake = asyncio.Event()

    def append(self, stream: str, chunk: bytes) -> None:
        (self.stdout if stream == "stdout" else self.stderr).append(chunk)
        self.logs.append(chunk)
        self._journal.append((stream, chunk))
        self._bytes += len(chunk) + ENTRY_OVERHEAD
        while self._bytes > JOURNAL_LIMIT and len(self._journal) > 1:
            self._bytes -= len(self._journal.popleft()[1]) + ENTRY_OVERHEAD
            self._first += 1
        self._notify()

    def close(self) -> None:
        self.closed = True
        self._notify()

    @property
    def held(self) -> int:
        """Bytes this output keeps alive (logs and the journal share stdout's/stderr's)."""
        return len(self.stdout) + len(self.stderr)

    def discard(self) -> None:
        """Forget the bytes of a finished process (the sandbox-wide output budget)."""
        self.stdout, self.stderr, self.logs = LogBuffer(), LogBuffer(), LogBuffer()
        self._first += len(self._journal)
        self._journal.clear()
        self._bytes = 0

    def _notify(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()

    @property
    def start(self) -> int:
        """Cursor of the oldest chunk still held: where a new follower begins (backfill)."""
        return self._first

    @property
    def end(self) -> int:
        return self._first + len(self._journal)

    def read(self, cursor: int) -> tuple[list[tuple[str, bytes]], int, bool]:
        """Chunks from cursor on, the next cursor, and whether chunks were skipped (overflow)."""
        skipped = cursor < self._first
        cursor = max(cursor, self._first)
        chunks = list(itertools.islice(self._journal, cursor - self._first, None))
        return chunks, self.end, skipped

    async def wait(self, cursor: int, timeout: float) -> bool:
        """Until there is something past cursor or the output ended; False on timeout."""
        if cursor < self.end or self.closed:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
            return True
        return False


class LineSplitter:
    """Chunks → complete lines per stream (the stream framings are line based)."""

    MAX_LINE = 64 * 1024  # a newline-free flood is cut into lines this long

    def __init__(self) -> None:
        self._partial: dict[str, bytes] = {}

    def feed(self, stream: str, chunk: bytes) -> list[tuple[str, str]]:
        data = self._partial.pop(stream, b"") + chunk
        *lines, rest = data.split(b"\n")
        out = [(stream, _decode(line)) for line in lines]
        while len(rest) > self.MAX_LINE:
            out.append((stream, _decode(rest[: self.MAX_LINE])))
            rest = rest[self.MAX_LINE :]
        if rest:
            self._partial[stream] = rest
        return out

    def flush(self) -> list[tuple[str, str]]:
        out = [(s, _decode(b)) for s, b in self._partial.items()]
        self._partial.clear()
        return out

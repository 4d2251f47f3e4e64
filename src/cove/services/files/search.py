"""find, content search (ripgrep) and fuzzy search over a sandbox tree.

`find` and `rg` run on the host with their cwd on a confined view of the start directory
(runtime/fsroot.confined_view): a read-only mount where no symlink is followed and `..`
stops at the top, so neither a planted link nor a swap during the walk leads out. They only
ever see '.'-relative paths; the start directory itself was resolved inside the root first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass

from cove.domain.errors import InvalidRequest, Unavailable
from cove.runtime.fsroot import confined_view
from cove.services.files.core import SandboxFiles
from cove.services.files.rooted import normalize
from cove.services.files.tree import Filter, walk

TOOL_TIMEOUT_S = 30.0
MAX_LINE = 1 << 20  # a longer output line (a huge path or match) is cut off
DEFAULT_SKIP = ["node_modules", ".git", ".venv", "venv", "__pycache__", "dist", "build", ".next"]
MAX_FUZZY_SCAN = 200_000


@dataclass
class Match:
    path: str
    line: int
    column: int
    text: str
    context: str | None = None


async def find(
    files: SandboxFiles, path: str, kind: str | None, flt: Filter, limit: int
) -> list[tuple[str, str]]:
    """[(path, 'file'|'directory')] below `path`, at most `limit`."""
    path = normalize(path)
    argv = ["find", ".", "-mindepth", "1"]
    prune = [f"-name {n}" for n in sorted(flt.exclude_dirs)] + (
        ["-name .*"] if flt.exclude_hidden else []
    )
    if prune:
        argv += ["-type", "d", "(", *_or(prune), ")", "-prune", "-o"]
    types = {
        "file": ["-type", "f"],
        "directory": ["-type", "d"],
        None: ["(", "-type", "f", "-o", "-type", "d", ")"],
    }
    if kind not in types:
        raise InvalidRequest("type must be 'file' or 'directory'")
    argv += types[kind]
    if flt.patterns:
        argv += ["(", *_or(f"-name {p}" for p in flt.patterns), ")"]
    if flt.exclude_hidden:
        argv += ["!", "-name", ".*"]
    argv += ["-printf", r"%y %P\n"]
    found = []
    async for line in _run_confined(files, path, argv):
        kind_char, _, rel = line.partition(" ")
        found.append((_join(path, rel), "directory" if kind_char == "d" else "file"))
        if len(found) >= limit:
            break
    return found


def _or(tests: object) -> list[str]:
    out: list[str] = []
    for test in tests:  # type: ignore[attr-defined]
        flag, _, value = test.partition(" ")
        out += (["-o"] if out else []) + [flag, value]
    return out


async def grep(
    files: SandboxFiles,
    path: str,
    query: str,
    case_sensitive: bool,
    context: int,
    limit: int,
    file_pattern: str | None,
    exclude_dirs: list[str],
) -> list[Match]:
    if not query:
        raise InvalidRequest("query is required")
    if shutil.which("rg") is None:
        raise Unavailable("content search needs ripgrep (rg) on the host")
    path = normalize(path)
    argv = ["rg", "--json", "--no-config", "--no-ignore", "--hidden", "--fixed-strings"]
    argv += ["--max-filesize", "64M", "--max-columns", "2000", "--max-columns-preview"]
    argv += ["--context", str(context)] + ([] if case_sensitive else ["--ignore-case"])
    if file_pattern:
        argv += ["--glob", file_pattern]
    for name in exclude_dirs or DEFAULT_SKIP:
        argv += ["--glob", f"!{name}/"]
    argv += ["--", query, "."]
    return await _collect(_run_confined(files, path, argv), path, context, limit)


async def _collect(lines: AsyncIterator[str], path: str, context: int, limit: int) -> list[Match]:
    matches: list[Match] = []
    before: list[tuple[int, str]] = []  # context lines seen since the last match
    async for raw in lines:
        msg = json.loads(raw)
        kind, data = msg.get("type"), msg.get("data", {})
        if kind == "begin":
            before = []
        elif kind == "context":
            number, text = data["line_number"], _text(data["lines"])
            last = matches[-1] if matches else None
            if (
                last
                and last.path == _join(path, _text(data["path"]))
                and number - last.line <= context
            ):
                last.context = f"{last.context}\n{text}" if last.context else text
            before = [*before, (number, text)][-context:] if context else []
        elif kind == "match":
            if len(matches) >= limit:
                break
            number, text = data["line_number"], _text(data["lines"])
            start = data["submatches"][0]["start"] if data["submatches"] else 0
            column = len(text.encode()[:start].decode(errors="replace")) + 1
            ctx = "\n".join(t for n, t in before if number - n <= context) if context else None
            matches.append(
                Match(_join(path, _text(data["path"])), number, column, text, ctx or None)
            )
            before = []
    return matches


def _text(field: dict) -> str:
    text = field.get("text")
    if text is None:  # not UTF-8: rg sends base64 bytes
        import base64

        text = base64.b64decode(field.get("bytes", "")).decode("utf-8", errors="replace")
    return text.removeprefix("./").rstrip("\n")


def _join(base: str, rel: str) -> str:
    rel = rel.removeprefix("./")
    return base.rstrip("/") + "/" + rel if rel else base


async def _run_confined(files: SandboxFiles, path: str, argv: list[str]) -> AsyncIterator[str]:
    """stdout lines of a host tool run with cwd on a confined view of `path`; killed when the
    caller stops reading, after TOOL_TIMEOUT_S, or when the request goes away."""
    view = await files.rooted.run(_view_of, files, path)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=f"/proc/self/fd/{view}",
            pass_fds=(view,),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    finally:
        os.close(view)  # the child holds the view as its cwd from here on
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(TOOL_TIMEOUT_S):
            async for line in _lines(proc.stdout):
                yield line
    except TimeoutError:
        pass  # too slow: answer with what was found
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def _lines(stream: asyncio.StreamReader) -> AsyncIterator[str]:
    """Lines read in 256 KiB gulps (one await per line is most of the cost of a long listing);
    a line longer than MAX_LINE ends the output."""
    rest = b""
    while chunk := await stream.read(1 << 18):
        *lines, rest = (rest + chunk).split(b"\n")
        for line in lines:
            yield line.decode("utf-8", errors="replace")
        if len(rest) > MAX_LINE:
            return
    if rest:
        yield rest.decode("utf-8", errors="replace")


def _view_of(files: SandboxFiles, path: str) -> int:
    fd = files.rooted.open_dir(path)
    try:
        return confined_view(fd)
    except OSError as exc:
        raise Unavailable(f"cannot search this sandbox: {exc.strerror}") from None
    finally:
        os.close(fd)


# -- fuzzy -----------------------------------------------------------------------------------


def fuzzy(
    files: SandboxFiles, path: str, query: str, flt: Filter, limit: int
) -> list[tuple[str, int, str]]:
    """[(path, score, type)] of the entries whose relative path holds `query`'s characters
    in order, best first (consecutive runs and name matches score higher)."""
    path = normalize(path)
    needle = query.lower()
    top = files.rooted.open_dir(path)
    scored = []
    try:
        for n, node in enumerate(walk(top, path, flt)):
            if n >= MAX_FUZZY_SCAN:
                break
            if not node.is_dir and not flt.keep(node.name):
                continue
            score = _score(needle, node.path[len(path) :].lower(), node.name.lower())
            if score > 0:
                scored.append((node.path, score, "directory" if node.is_dir else "file"))
    finally:
        os.close(top)
    scored.sort(key=lambda m: (-m[1], len(m[0]), m[0]))
    return scored[:limit]


def _score(needle: str, hay: str, name: str) -> int:
    if not needle:
        return 1
    score, pos, run = 0, 0, 0
    for ch in needle:
        found = hay.find(ch, pos)
        if found < 0:
            return 0
        run = run + 1 if found == pos else 1
        score += 1 + run * 2
        pos = found + 1
    if needle in name:
        score += 50 + (50 if name.startswith(needle) else 0)
    return score

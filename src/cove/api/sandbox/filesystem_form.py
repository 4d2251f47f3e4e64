"""multipart/form-data bodies read as a stream: the `file` part flows out chunk by chunk, the
small text fields (permissions, path) are collected. Starlette's request.form() would spool
the whole file to the host's /tmp first — neither bounded nor counted against the sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from cove.domain.errors import InvalidRequest

MAX_FIELD = 64 * 1024
FILE_FIELD = "file"


class FormStream:
    def __init__(self, request: Request) -> None:
        ctype, params = parse_options_header(request.headers.get("content-type", ""))
        boundary = params.get(b"boundary")
        if ctype != b"multipart/form-data" or not boundary:
            raise InvalidRequest("expected a multipart/form-data body with a boundary")
        self.fields: dict[str, str] = {}
        self.had_file = False
        self._request = request
        self._out: list[bytes] = []
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._name: str | None = None
        self._field: list[bytes] = []
        self._field_size = 0
        callbacks = {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_cb,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }
        self._parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]

    async def file_chunks(self) -> AsyncIterator[bytes]:
        """Bytes of the `file` part; 400 at the end when the body had none."""
        async for chunk in self._request.stream():
            try:
                self._parser.write(chunk)
            except InvalidRequest:
                raise
            except Exception as exc:  # the parser's own errors: a malformed body
                raise InvalidRequest(f"malformed multipart body: {exc}") from None
            for data in self._drain():
                yield data
        self._parser.finalize()
        for data in self._drain():
            yield data
        if not self.had_file:
            raise InvalidRequest("multipart body needs a 'file' part")

    def _drain(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def _part_begin(self) -> None:
        self._disposition, self._name, self._field, self._field_size = b"", None, [], 0

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_cb(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def _headers_finished(self) -> None:
        _kind, params = parse_options_header(self._disposition)
        self._name = params.get(b"name", b"").decode("utf-8", errors="replace")
        if self._name == FILE_FIELD:
            self.had_file = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._name == FILE_FIELD:
            self._out.append(bytes(data[start:end]))
            return
        self._field_size += end - start
        if self._field_size > MAX_FIELD:
            raise InvalidRequest(f"form field {self._name!r} is larger than {MAX_FIELD} bytes")
        self._field.append(bytes(data[start:end]))

    def _part_end(self) -> None:
        if self._name and self._name != FILE_FIELD:
            self.fields[self._name] = b"".join(self._field).decode("utf-8", errors="replace")

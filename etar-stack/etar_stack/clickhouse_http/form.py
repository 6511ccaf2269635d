"""multipart/form-data request bodies, as ClickHouse's HTTP interface reads them.

A form carries text fields (``query``, ``param_<name>``, settings, an external table's
``<name>_structure`` / ``<name>_types`` / ``<name>_format``) and file parts: external data,
each a temporary table named after its field for the one query (``external``). Text fields
count against the query's limit (``max_query_bytes``), files against ``max_external_bytes``;
files spool to disk beyond ``SPOOL_BYTES``. Parsing reads the body as it arrives (a worker
thread), never on the event loop.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import IO

from python_multipart.multipart import MultipartParser, parse_options_header

from etar_stack.clickhouse_http.body import too_large
from etar_stack.clickhouse_http.engine import EngineError, Readable

SPOOL_BYTES = 8 * 1024 * 1024
CHUNK = 1024 * 1024


def is_form(content_type: str | None) -> bool:
    """Whether a request's ``Content-Type`` is multipart/form-data."""
    return bool(content_type) and parse_options_header(content_type)[0].lower() == (
        b"multipart/form-data")


def _bad(text: str) -> EngineError:
    return EngineError(36, f"Code: 36. DB::Exception: {text}. (BAD_ARGUMENTS)")


@dataclass
class Form:
    """A parsed form: its text fields (in order) and its files by field name."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, IO[bytes]] = field(default_factory=dict)

    def close(self) -> None:
        for data in self.files.values():
            data.close()


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    name: str = ""
    is_file: bool = False
    text: bytearray = field(default_factory=bytearray)
    data: IO[bytes] | None = None


class _Reader:
    """The parser's callbacks: parts in order, sizes bounded as they arrive."""

    def __init__(self, form: Form, max_field_bytes: int, max_file_bytes: int) -> None:
        self.form = form
        self.max_field, self.max_file = max_field_bytes, max_file_bytes
        self.field_bytes = self.file_bytes = 0
        self.part = _Part()
        self.name_text = bytearray()
        self.value_text = bytearray()

    def part_begin(self) -> None:
        self.part = _Part()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.name_text += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self.value_text += data[start:end]

    def header_end(self) -> None:
        self.part.headers[self.name_text.decode("latin-1").lower()] = (
            self.value_text.decode("latin-1"))
        self.name_text, self.value_text = bytearray(), bytearray()

    def headers_finished(self) -> None:
        kind, options = parse_options_header(self.part.headers.get("content-disposition", ""))
        name = options.get(b"name")
        if kind.lower() != b"form-data" or not name:
            raise _bad("A multipart/form-data part without a form-data name")
        self.part.name = name.decode()
        self.part.is_file = b"filename" in options
        if self.part.is_file:
            if self.part.name in self.form.files:
                raise _bad(f"External table {self.part.name} is sent twice")
            self.part.data = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
            self.form.files[self.part.name] = self.part.data

    def part_data(self, data: bytes, start: int, end: int) -> None:
        size = end - start
        if self.part.data is not None:
            self.file_bytes += size
            if self.file_bytes > self.max_file:
                raise EngineError(229, f"Code: 229. DB::Exception: External data larger than "
                                       f"{self.max_file} bytes. (QUERY_IS_TOO_LARGE)")
            self.part.data.write(data[start:end])
        else:
            self.field_bytes += size
            if self.field_bytes > self.max_field:
                raise too_large(self.max_field)
            self.part.text += data[start:end]

    def part_end(self) -> None:
        if self.part.data is not None:
            self.part.data.seek(0)
        else:
            try:
                self.form.fields[self.part.name] = self.part.text.decode()
            except UnicodeDecodeError:
                raise _bad(f"Form field {self.part.name} is not UTF-8") from None


def read_form(body: Readable, content_type: str, max_field_bytes: int,
              max_file_bytes: int) -> Form:
    """Parse a multipart/form-data body (for a worker thread: it waits for the body)."""
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise _bad("multipart/form-data without a boundary")
    form = Form()
    reader = _Reader(form, max_field_bytes, max_file_bytes)
    parser = MultipartParser(boundary, {  # type: ignore[arg-type]
        "on_part_begin": reader.part_begin, "on_header_field": reader.header_field,
        "on_header_value": reader.header_value, "on_header_end": reader.header_end,
        "on_headers_finished": reader.headers_finished, "on_part_data": reader.part_data,
        "on_part_end": reader.part_end})
    try:
        while chunk := body.read(CHUNK):
            parser.write(chunk)
        parser.finalize()
        if parser.state.name != "END":
            raise _bad("The multipart/form-data body ends before its closing boundary")
    except EngineError:
        form.close()
        raise
    except Exception as exc:  # the parser's own complaints about a malformed body
        form.close()
        raise _bad(f"Malformed multipart/form-data body: {exc}") from None
    return form

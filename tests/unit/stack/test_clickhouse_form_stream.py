"""Pure pieces of the endpoint's client surface: multipart forms, external tables' parameters,
the result pipe and the exception block written after the first byte."""

from __future__ import annotations

import io
import threading
import time

import pytest

from etar_stack.clickhouse_http import external, form, stream
from etar_stack.clickhouse_http.engine import EngineError

BOUNDARY = "xYz"
BODY = (b"--xYz\r\nContent-Disposition: form-data; name=\"query\"\r\n\r\nSELECT * FROM t\r\n"
        b"--xYz\r\nContent-Disposition: form-data; name=\"param_p\"\r\n\r\n\xc3\xa9\r\n"
        b"--xYz\r\nContent-Disposition: form-data; name=\"t\"; filename=\"t.csv\"\r\n"
        b"Content-Type: text/csv\r\n\r\n1,a\r\n2,b\r\n--xYz--\r\n")
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


class _Trickle:
    """A body arriving a few bytes at a time."""

    def __init__(self, data: bytes, step: int = 5) -> None:
        self._data, self._step = io.BytesIO(data), step

    def read(self, size: int = -1, /) -> bytes:
        return self._data.read(min(self._step, size) if size >= 0 else self._step)


def test_a_form_parses_fields_and_files_across_reads() -> None:
    parsed = form.read_form(_Trickle(BODY), CONTENT_TYPE, 1024, 1024)
    assert parsed.fields == {"query": "SELECT * FROM t", "param_p": "é"}
    assert parsed.files["t"].read() == b"1,a\r\n2,b"
    parsed.close()
    assert form.is_form(CONTENT_TYPE) and not form.is_form("text/plain")


@pytest.mark.parametrize(("body", "fields", "files", "code"), [
    (BODY[:-10], 1024, 1024, 36),  # no closing boundary
    (BODY, 10, 1024, 229),  # the fields beyond the query's limit
    (BODY, 1024, 4, 229),  # the files beyond external data's limit
    (BODY.replace(b"form-data; name=\"query\"", b"form-data"), 1024, 1024, 36),
])
def test_a_bad_or_too_large_form_is_refused(body: bytes, fields: int, files: int,
                                            code: int) -> None:
    with pytest.raises(EngineError) as refused:
        form.read_form(_Trickle(body), CONTENT_TYPE, fields, files)
    assert refused.value.code == code


def test_external_tables_take_their_description_from_the_parameters() -> None:
    parsed = form.read_form(_Trickle(BODY), CONTENT_TYPE, 1024, 1024)
    params = {"t_types": "UInt8, Array(Tuple(UInt8, String))", "t_format": "CSV",
              "max_threads": "1"}
    (table,) = external.tables(parsed, params)
    assert table.structure == "_1 UInt8, _2 Array(Tuple(UInt8, String))"
    assert table.insert() == "INSERT INTO `t` FORMAT CSV"
    assert external.parameters(params, parsed) == {"t_types", "t_format"}
    for bad in ({}, {"t_types": "UInt8", "t_structure": "a UInt8"},
                {"t_types": "UInt8", "t_format": "CSV x"}):
        with pytest.raises(EngineError):
            external.tables(parsed, bad)
    parsed.close()


def test_a_closed_pipe_stops_its_writer() -> None:
    pipe = stream.Pipe()
    for _ in range(stream.QUEUED):
        pipe.write(b"x")
    blocked: list[BaseException] = []

    def write() -> None:
        try:
            pipe.write(b"y")  # the queue is full: waits for the reader
        except EngineError as exc:
            blocked.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(0.3)
    pipe.close()  # the reader left
    writer.join(5)
    assert not writer.is_alive()
    assert [getattr(exc, "code", None) for exc in blocked] == [394]
    assert pipe.tell() == stream.QUEUED


def test_the_exception_block_is_framed_by_its_tag() -> None:
    block = stream.exception_block("Code: 395. DB::Exception: boom (version 1)", "abc")
    assert block == (b"\r\n__exception__\r\nabc\r\nCode: 395. DB::Exception: boom (version 1)\n"
                     b"43 abc\r\n__exception__\r\n")

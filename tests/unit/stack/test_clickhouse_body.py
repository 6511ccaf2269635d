"""Request bodies as they arrive: streamed to the reading thread through a bounded queue,
decoded there, never on the event loop; a body that fails midway commits nothing."""

from __future__ import annotations

import gzip
import io
import os
import threading
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import anyio
import pytest
from anyio import to_thread
from starlette.requests import ClientDisconnect, Request

from etar_stack.clickhouse_http import blocks, body, codecs
from etar_stack.clickhouse_http.body import Body
from etar_stack.clickhouse_http.engine import Engine, EngineError

T = TypeVar("T")
Receive = Callable[[], Awaitable[dict[str, Any]]]


def _messages(chunks: list[bytes], disconnect: bool = False) -> Receive:
    """ASGI ``receive`` handing out ``chunks``, then the body's end or the client's leaving."""
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks]
    messages.append({"type": "http.disconnect"} if disconnect
                    else {"type": "http.request", "body": b"", "more_body": False})

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    return receive


def _request(receive: Receive, encoding: str | None = None) -> Request:
    headers = [(b"content-encoding", encoding.encode())] if encoding else []
    return Request({"type": "http", "method": "POST", "path": "/", "query_string": b"",
                    "headers": headers}, receive)


def _read_in_thread(request: Request, read: Callable[[Body], T], native_blocks: bool = False
                    ) -> T:
    """``read(body)`` in a worker thread while the body is received, as an insert reads it."""
    async def main() -> T:
        received = Body(request, native_blocks)
        return await received.serving(lambda: to_thread.run_sync(read, received))

    return anyio.run(main)


def _pieces(received: Body) -> list[bytes]:
    return list(iter(lambda: received.read(1 << 30), b""))


def _csv(rows: int) -> bytes:
    """CSV that compresses little, so its gzip body spans several received batches."""
    return b"".join(b"%d,%s\n" % (i, os.urandom(24).hex().encode()) for i in range(rows))


def _row_chunks(data: bytes, size: int = 256 * 1024) -> list[bytes]:
    """``data`` cut after a newline every ``size`` bytes or so."""
    chunks, start = [], 0
    while start < len(data):
        end = data.find(b"\n", start + size) + 1 or len(data)
        chunks.append(data[start:end])
        start = end
    return chunks


def test_the_reader_gets_the_body_while_it_still_arrives() -> None:
    chunks = [os.urandom(256 * 1024) for _ in range(12)]
    first_taken = threading.Event()
    taken_before_the_end: list[bool] = []
    inner = _messages(chunks[:-1])
    sent = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        sent += 1
        if sent == len(chunks):  # the last chunk waits (boundedly) for the reader's first take
            taken_before_the_end.append(await to_thread.run_sync(first_taken.wait, 10))
            return {"type": "http.request", "body": chunks[-1], "more_body": False}
        return await inner()

    def read(received: Body) -> bytes:
        head = received.read(1 << 30)
        first_taken.set()
        return head + received.read()

    assert _read_in_thread(_request(receive), read) == b"".join(chunks)
    assert taken_before_the_end == [True]


def test_the_queue_bounds_what_is_received_ahead_of_the_reader() -> None:
    chunk = b"x" * (256 * 1024)
    received_chunks = 0

    async def receive() -> dict[str, Any]:  # a body of 100 MiB, arriving at once
        nonlocal received_chunks
        received_chunks += 1
        await anyio.sleep(0)
        return {"type": "http.request", "body": chunk, "more_body": received_chunks < 400}

    async def main() -> None:
        stalled = Body(_request(receive))
        await stalled.serving(lambda: anyio.sleep(0.5))  # nothing reads it

    anyio.run(main)
    ahead = received_chunks * len(chunk)
    assert body.QUEUE * body.BATCH <= ahead <= (body.QUEUE + 1) * body.BATCH + len(chunk)


def test_request_bodies_are_decompressed_in_the_reading_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []

    class Recording:
        def __init__(self) -> None:
            self._inner = zlib.decompressobj(wbits=31)

        def pieces(self, data: bytes) -> Iterator[bytes]:
            threads.append(threading.get_ident())
            yield self._inner.decompress(data)

        def finish(self) -> None:
            threads.append(threading.get_ident())

    monkeypatch.setattr(codecs, "decoder", lambda encoding: Recording())
    payload = b"1,row\n" * 200_000
    compressed = gzip.compress(payload)
    chunks = [compressed[i:i + 65_536] for i in range(0, len(compressed), 65_536)]
    loop_thread: list[int] = []

    def read(received: Body) -> tuple[bytes, int]:
        return received.read(), threading.get_ident()

    async def main() -> tuple[bytes, int]:
        loop_thread.append(threading.get_ident())
        received = Body(_request(_messages(chunks), "gzip"))
        return await received.serving(lambda: to_thread.run_sync(read, received))

    data, reader = anyio.run(main)
    assert data == payload
    assert set(threads) == {reader} and reader not in loop_thread


def test_a_gzip_bomb_reaches_the_reader_in_bounded_pieces(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codecs, "STEP", 64 * 1024)
    bomb = gzip.compress(bytes(4 * 1024 * 1024))
    sizes = [len(piece) for piece in _read_in_thread(
        _request(_messages([bomb]), "gzip"), _pieces)]
    assert sum(sizes) == 4 * 1024 * 1024
    assert max(sizes) <= 64 * 1024


@pytest.mark.parametrize("data", [gzip.compress(b"1,row\n" * 1000)[:-20], b"not gzip at all"])
def test_a_truncated_or_corrupt_body_gets_code_354(data: bytes) -> None:
    with pytest.raises(EngineError) as caught:
        _read_in_thread(_request(_messages([data]), "gzip"), _pieces)
    assert caught.value.code == 354 and "CANNOT_DECOMPRESS" in caught.value.message


def test_an_unknown_content_encoding_gets_code_36() -> None:
    with pytest.raises(EngineError) as caught:
        Body(_request(_messages([b"x"]), "snappy"))
    assert caught.value.code == 36


def test_the_client_leaving_midway_fails_the_reader() -> None:
    with pytest.raises(ClientDisconnect):
        _read_in_thread(_request(_messages([b"1,a\n" * 1000], disconnect=True)), _pieces)


def test_empty_native_blocks_do_not_end_the_body() -> None:
    stream = blocks.compress_block(b"") + blocks.compress_block(b"1\n") + blocks.compress_block(b"")
    assert _read_in_thread(_request(_messages([stream])), _pieces, native_blocks=True) == [b"1\n"]


def _gzip_then_garbage() -> tuple[list[bytes], str | None]:
    whole = gzip.compress(_csv(60_000)) + b"\x1f\x8bnot a gzip member"
    return [whole[i:i + 256 * 1024] for i in range(0, len(whole), 256 * 1024)], "gzip"


def _blocks_then_a_bad_checksum() -> tuple[list[bytes], str | None]:
    data = _csv(60_000)
    good = [blocks.compress_block(data[i:i + (1 << 20)]) for i in range(0, len(data), 1 << 20)]
    bad = bytearray(blocks.compress_block(b"1,x\n"))
    bad[0] ^= 0xFF
    return [*good, bytes(bad)], None


class _Counting:
    """The body as the engine reads it, counting what it got."""

    def __init__(self, inner: Body) -> None:
        self.inner, self.taken = inner, 0

    def read(self, size: int = -1, /) -> bytes:
        data = self.inner.read(size)
        self.taken += len(data)
        return data


@pytest.mark.parametrize("case, expected", [
    ("gzip", 354), ("native", 40), ("disconnect", ClientDisconnect)])
def test_an_insert_whose_body_fails_midway_commits_nothing(
        engine: Engine, case: str, expected: int | type[Exception]) -> None:
    table = f"body_{uuid.uuid4().hex[:8]}"
    engine.execute(f"CREATE TABLE {table} (a UInt64, s String) ENGINE = MergeTree ORDER BY a",
                   "TSV")
    if case == "gzip":
        chunks, encoding = _gzip_then_garbage()
    elif case == "native":
        chunks, encoding = _blocks_then_a_bad_checksum()
    else:  # whole rows up to the client's leaving: only cancelling keeps them out
        chunks, encoding = _row_chunks(_csv(60_000)), None
    request = _request(_messages(chunks, disconnect=case == "disconnect"), encoding)
    counted: list[_Counting] = []

    def insert(received: Body) -> None:
        counted.append(_Counting(received))
        engine.insert(f"INSERT INTO {table}", "CSV", counted[0])

    with pytest.raises((EngineError, ClientDisconnect)) as caught:
        _read_in_thread(request, insert, native_blocks=case == "native")
    if isinstance(expected, int):
        assert isinstance(caught.value, EngineError) and caught.value.code == expected
    else:
        assert isinstance(caught.value, expected)
    assert counted[0].taken > 2 * body.BATCH  # the engine had taken much of it already
    count = engine.execute(f"SELECT count() FROM {table}", "TSV").body.read()
    assert count == b"0\n"
    engine.insert(f"INSERT INTO {table}", "CSV", io.BytesIO(b"7,x\n"))  # the engine is intact
    assert engine.execute(f"SELECT count() FROM {table}", "TSV").body.read() == b"1\n"
    engine.execute(f"DROP TABLE {table}", "TSV")



def test_a_stalled_upload_fails_after_the_receive_timeout() -> None:
    first = [b"1,a\n"]

    async def receive() -> dict[str, Any]:
        if first:
            return {"type": "http.request", "body": first.pop(), "more_body": True}
        await anyio.sleep(60)  # the client sends nothing more
        return {"type": "http.request", "body": b"", "more_body": False}

    async def main() -> None:
        stalled = Body(_request(receive), receive_timeout=0.3)
        await stalled.serving(lambda: to_thread.run_sync(_pieces, stalled))

    started = time.monotonic()
    with pytest.raises(EngineError) as caught:
        anyio.run(main)
    assert caught.value.code == 209 and "SOCKET_TIMEOUT" in caught.value.message
    assert time.monotonic() - started < 10

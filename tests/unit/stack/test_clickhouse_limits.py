"""The ClickHouse endpoint's defences: concatenated frames, decompression bombs, native blocks
that lie about their size, a failed result stream, boolean settings, session lifetimes."""

from __future__ import annotations

import gzip
import os
import threading
import time
import zlib
from collections.abc import Callable

import brotli
import lz4.frame
import pytest
from backports import zstd

from etar_stack.clickhouse_http import blocks, codecs, server
from etar_stack.clickhouse_http.engine import Engine, EngineError

_ONE_SHOT: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress, "deflate": zlib.compress, "lz4": lz4.frame.compress,
    "zstd": zstd.compress}
"""Encoders of one whole frame (gzip member, zlib stream) per call."""


@pytest.mark.parametrize("encoding", sorted(_ONE_SHOT))
def test_concatenated_frames_are_all_decoded(encoding: str) -> None:
    compress = _ONE_SHOT[encoding]
    parts = [os.urandom(3_000) + b"a" * 50_000, b"b" * 70_000, os.urandom(10)]
    body = b"".join(compress(part) for part in parts)
    for cut in (len(body), 333):  # whole, and split across and inside frames
        decoder = codecs.decoder(encoding)
        out = b"".join(b"".join(decoder.pieces(body[i:i + cut]))
                       for i in range(0, len(body), cut))
        decoder.finish()
        assert out == b"".join(parts)
    cut_last = codecs.decoder(encoding)  # the last frame truncated still fails
    cut_last.decompress(body[:-5])
    with pytest.raises(ValueError, match="truncated"):
        cut_last.finish()


def _bomb(encoding: str, size: int) -> bytes:
    zeros = bytes(size)
    if encoding == "br":
        return bytes(brotli.compress(zeros))
    return _ONE_SHOT[encoding](zeros)


@pytest.mark.parametrize("encoding", codecs.ENCODINGS)
def test_a_decompression_bomb_comes_out_in_bounded_pieces(
        encoding: str, monkeypatch: pytest.MonkeyPatch) -> None:
    step, size = 1024 * 1024, 32 * 1024 * 1024
    monkeypatch.setattr(codecs, "STEP", step)
    bomb = _bomb(encoding, size)
    assert len(bomb) < size // 100  # a small body that expands a hundredfold or more
    decoder = codecs.decoder(encoding)
    sizes = [len(piece) for piece in decoder.pieces(bomb)]
    decoder.finish()
    assert sum(sizes) == size
    assert max(sizes) <= step


def _zstd_block(payload: bytes, declared: int) -> bytes:
    header = blocks._HEADER.pack(blocks.ZSTD, blocks.HEADER_SIZE + len(payload), declared)
    return blocks.checksum(header + payload) + header + payload


@pytest.mark.parametrize("actual, declared", [(64 * 1024 * 1024, 10), (1_000, 2_000)])
def test_a_native_zstd_block_must_expand_to_its_declared_size(actual: int,
                                                              declared: int) -> None:
    block = _zstd_block(zstd.compress(bytes(actual)), declared)
    started = time.perf_counter()
    with pytest.raises(blocks.BlockError) as caught:
        blocks.BlockDecoder().decompress(block)
    assert caught.value.code == 271 and caught.value.name == "CANNOT_DECOMPRESS"
    assert time.perf_counter() - started < 5  # capped: 64 MiB is never produced


def test_native_blocks_come_out_one_block_at_a_time() -> None:
    stream = b"".join(blocks.compress_block(bytes([n]) * 100_000, blocks.ZSTD) for n in range(5))
    decoder = blocks.BlockDecoder()
    assert [len(piece) for piece in decoder.pieces(stream)] == [100_000] * 5
    two_frames = _zstd_block(zstd.compress(b"x" * 7) + zstd.compress(b"y" * 3), 10)
    assert blocks.BlockDecoder().decompress(two_frames) == b"x" * 7 + b"y" * 3


def test_a_result_stream_that_fails_midway_is_cancelled(engine: Engine) -> None:
    conn, observer = engine.connect(), engine.connect()
    try:
        def fail(data: bytes) -> bytes:
            raise EngineError(48, "Code: 48. DB::Exception: cannot shape. (NOT_IMPLEMENTED)")

        with pytest.raises(EngineError):
            conn.execute("SELECT number AS cancel_marker FROM numbers(1000000000)", "TSV",
                         shape=fail)
        deadline, running = time.monotonic() + 10, b"?"
        while running and time.monotonic() < deadline:
            running = observer.execute(
                "SELECT query FROM system.processes WHERE query LIKE '%cancel_marker%' "
                "AND query NOT LIKE '%system.processes%'", "TSV").body.read()
            time.sleep(0.1)
        assert running == b"", "the failed statement still runs in the engine"
        assert conn.execute("SELECT 42", "TSV").body.read() == b"42\n"
    finally:
        conn.close()
        observer.close()


@pytest.mark.parametrize("value, expected", [
    ("0", False), ("1", True), ("true", True), ("TRUE", True), ("False", False),
    ("fAlSe", False)])
def test_boolean_settings_parse_as_clickhouse_does(value: str, expected: bool) -> None:
    assert server._flag({"x": value}, "x") is expected
    assert server._flag({}, "x") is False


@pytest.mark.parametrize("value", ["yes", "2", "", " 1", "off"])
def test_a_malformed_boolean_setting_is_refused(value: str) -> None:
    with pytest.raises(EngineError) as caught:
        server._flag({"x": value}, "x")
    assert caught.value.code == 467 and "CANNOT_PARSE_BOOL" in caught.value.message


def test_a_session_times_out_from_the_end_of_its_last_request() -> None:
    sessions = server._Sessions()
    session = sessions.get("long", timeout=0.2, check=False)
    assert session.lock.acquire(blocking=False)
    time.sleep(0.4)  # a request running longer than the session's timeout
    session.release()
    sessions.get("other", timeout=60, check=False)  # reaps expired sessions
    assert sessions.get("long", timeout=0.2, check=True) is session


def test_closing_all_sessions_waits_for_a_running_statement() -> None:
    closed: list[float] = []

    class Conn:
        def close(self) -> None:
            closed.append(time.monotonic())

    sessions = server._Sessions()
    session = sessions.get("busy", timeout=60, check=False)
    session.connection = Conn()  # type: ignore[assignment]
    assert session.lock.acquire(blocking=False)
    released = time.monotonic() + 0.3

    def finish_statement() -> None:
        time.sleep(0.3)
        session.release()

    worker = threading.Thread(target=finish_statement)
    worker.start()
    sessions.close_all(wait=5)
    worker.join(5)
    assert closed and closed[0] >= released - 0.05
    assert session.connection is None


def test_closing_all_sessions_leaves_a_stuck_one_open_after_the_wait() -> None:
    class Conn:
        def close(self) -> None:
            raise AssertionError("closed while a statement runs on it")

    sessions = server._Sessions()
    session = sessions.get("stuck", timeout=60, check=False)
    session.connection = Conn()  # type: ignore[assignment]
    assert session.lock.acquire(blocking=False)
    started = time.monotonic()
    sessions.close_all(wait=0.2)
    assert 0.15 <= time.monotonic() - started < 5

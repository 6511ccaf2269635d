"""A result sent while its statement still runs, and an error that comes after its first byte.

The statement runs in a thread of its own and writes its output into a ``Pipe`` (a few pieces
queued ahead of the client at most: a slow client slows the statement, never the memory). The
response starts once ``STREAM_AFTER_BYTES`` are held or ``STREAM_AFTER_SECONDS`` passed since
the first piece; a statement ending before that is answered whole, its errors with their HTTP
status and summary as before. An error after the response started is written into the stream
as ClickHouse 25.11+ writes it: ``__exception__``, the response's ``X-ClickHouse-Exception-Tag``,
the message (``Code: N. DB::Exception: …``), its length and the tag again.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import threading
import zlib
from dataclasses import dataclass

from etar_stack.clickhouse_http import blocks, codecs
from etar_stack.clickhouse_http.engine import EngineError, Stats

STREAM_AFTER_BYTES = 1024 * 1024
STREAM_AFTER_SECONDS = 1.0
QUEUED = 8
"""Pieces queued ahead of the client at most."""
_POLL = 0.25


@dataclass
class Done:
    """The statement ended; its final stats."""

    stats: Stats


@dataclass
class Failed:
    """The statement failed."""

    error: EngineError


Item = bytes | Done | Failed


def cancelled() -> EngineError:
    return EngineError(394, "Code: 394. DB::Exception: Query was cancelled: the client closed "
                            "the connection. (QUERY_WAS_CANCELLED)")


class Pipe:
    """The statement's thread writes; the response reads; closing it stops the statement."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Item] = queue.Queue(QUEUED)
        self._closed = threading.Event()
        self._size = 0

    def _put(self, item: Item) -> None:
        while True:
            if self._closed.is_set():
                raise cancelled()
            try:
                self._queue.put(item, timeout=_POLL)
            except queue.Full:
                continue
            if self._closed.is_set():  # closing made the room: nobody reads it
                raise cancelled()
            return

    def write(self, data: bytes, /) -> int:
        """Queue a piece of output (waits while the queue is full; raises once closed)."""
        if data:
            self._put(bytes(data))
            self._size += len(data)
        return len(data)

    def tell(self) -> int:
        return self._size

    def end(self, item: Done | Failed) -> None:
        """The statement's outcome, after its last piece (dropped when nobody reads)."""
        with contextlib.suppress(EngineError):
            self._put(item)

    def get(self, timeout: float | None = _POLL) -> Item | None:
        """The next item, None when none came within ``timeout``."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        """Nobody reads any more: the statement's next write fails, so it stops."""
        self._closed.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return


class Encoder:
    """A response's pieces in native blocks (``compress=1``) and/or HTTP-compressed."""

    def __init__(self, encoding: str | None, method: int | None) -> None:
        self._packer = blocks.BlockEncoder(method) if method is not None else None
        self._encoder = codecs.encoder(encoding) if encoding else None

    def __call__(self, chunk: bytes) -> bytes:
        if self._packer:
            chunk = self._packer.compress(chunk)
        if self._encoder and chunk:
            chunk = self._encoder.compress(chunk)
        return chunk

    def flush(self) -> bytes:
        tail = self._packer.flush() if self._packer else b""
        if self._encoder:
            tail = (self._encoder.compress(tail) if tail else b"") + self._encoder.flush()
        return tail


    def sync(self) -> bytes:
        """Everything encoded so far, so the client can read it now (the stream goes on)."""
        out = self._packer.flush() if self._packer else b""
        if self._encoder:
            out = self._encoder.compress(out) if out else b""
            sync = getattr(self._encoder, "sync", None)
            if sync is not None:
                out += sync()
            else:  # a zlib compressor (gzip, deflate)
                out += self._encoder.flush(zlib.Z_SYNC_FLUSH)  # type: ignore[call-arg]
        return out


def new_tag() -> str:
    """A response's exception tag (``X-ClickHouse-Exception-Tag``)."""
    return secrets.token_hex(8)


def exception_block(message: str, tag: str) -> bytes:
    """An error after the first byte, as a server writes it into the stream."""
    text = message.rstrip("\n").encode() + b"\n"
    return (b"\r\n__exception__\r\n" + tag.encode() + b"\r\n" + text
            + f"{len(text)} {tag}\r\n__exception__\r\n".encode())

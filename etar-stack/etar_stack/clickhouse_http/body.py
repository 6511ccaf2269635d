"""A request body as it arrives: received on the event loop, read in the worker thread that
uses it (the engine's insert), through a bounded queue.

The event loop only receives: it hands batches of about ``BATCH`` bytes to a queue of at most
``QUEUE`` batches and waits while it is full (TCP's flow control then slows the client). The
reading thread takes them without waiting on the event loop, joins them and decompresses them
(``Content-Encoding``, then native blocks for ``decompress=1``) one bounded piece at a time.
So an insert streams into the engine while its body arrives, memory stays bounded whatever the
body expands to, and a body that fails to decompress, is cut short or whose client goes away
fails its reader, which cancels the insert: nothing of it is committed. A client that sends
nothing for ``http_receive_timeout`` seconds fails it too, as in ClickHouse, so a stalled upload
does not hold a worker thread for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import anyio
from anyio import to_thread
from starlette.requests import Request

from etar_stack.clickhouse_http import blocks, codecs
from etar_stack.clickhouse_http.engine import EngineError

BATCH = 1024 * 1024
"""Received bytes queued at a time."""
QUEUE = 8
"""Batches received ahead of the reader at most."""
RECEIVE_TIMEOUT = 30.0
"""Seconds without any data before a body is given up (ClickHouse's ``http_receive_timeout``)."""

T = TypeVar("T")


def block_error(error: blocks.BlockError) -> EngineError:
    """ClickHouse's error for a malformed native block stream."""
    return EngineError(error.code, f"Code: {error.code}. DB::Exception: {error}. ({error.name})")


class Body:
    """One request's body: ``serving`` receives it beside the work that reads it.

    ``read`` is for a worker thread (it waits for what has not arrived yet); ``head`` and
    ``read_all`` are for the event loop (decompression still runs in a worker thread).
    """

    def __init__(self, request: Request, native_blocks: bool = False, verify: bool = True,
                 receive_timeout: float = RECEIVE_TIMEOUT) -> None:
        self._request = request
        self._timeout = receive_timeout
        self._encoding = request.headers.get("content-encoding")
        try:
            self._decoders: list[codecs.Decoder] = (
                [codecs.decoder(self._encoding)] if self._encoding else [])
        except ValueError as exc:
            raise EngineError(36, f"Code: 36. DB::Exception: {exc}. (BAD_ARGUMENTS)") from None
        if native_blocks:
            self._decoders.append(blocks.BlockDecoder(verify))
        self._queue: deque[list[bytes]] = deque()
        self._changed = threading.Condition()
        """Guards the queue and ``_closed``; notified when either changes."""
        self._closed = False
        """Whether receiving ended (nothing more is queued)."""
        self._complete = False
        """Whether the body's end arrived (else its queue closed early)."""
        self._failure: Exception | None = None
        """What ended receiving early (the client went away…), raised to the reader."""
        self._pieces: Iterator[bytes] | None = None
        self._buffer = b""

    async def serving(self, work: Callable[[], Awaitable[T]]) -> T:
        """``work()``, with the body received beside it; what is left unread when it ends
        (it failed early) is not waited for."""
        # a reading thread frees room in the queue without waiting for the loop to run it
        self._loop = asyncio.get_running_loop()
        self._room = anyio.Semaphore(QUEUE)
        self._arrived = anyio.Event()
        outcome: list[T] = []
        failure: list[Exception] = []
        async with anyio.create_task_group() as group:
            group.start_soon(self._feed)
            try:
                outcome.append(await work())
            except Exception as exc:  # kept apart, or the task group would wrap it
                failure.append(exc)
            group.cancel_scope.cancel()
        if failure:
            raise failure[0]
        return outcome[0]

    def _put(self, batch: list[bytes] | None) -> None:
        """Queue ``batch``, or (None) close the queue; wake whoever waits for it."""
        with self._changed:
            if batch is None:
                self._closed = True
            else:
                self._queue.append(batch)
            self._changed.notify_all()
        self._arrived.set()
        self._arrived = anyio.Event()

    async def _feed(self) -> None:
        batch: list[bytes] = []
        size = 0
        stream = self._request.stream()
        try:
            while True:
                with anyio.fail_after(self._timeout):
                    chunk = await anext(stream, None)
                if chunk is None:
                    break
                if chunk:
                    batch.append(chunk)
                    size += len(chunk)
                if size >= BATCH:
                    await self._room.acquire()
                    self._put(batch)
                    batch, size = [], 0
            if batch:
                await self._room.acquire()
                self._put(batch)
            self._complete = True
        except TimeoutError:
            self._failure = EngineError(
                209, f"Code: 209. DB::Exception: Timeout exceeded while reading the request body "
                     f"({self._timeout:g} s without data). (SOCKET_TIMEOUT)")
        except Exception as exc:  # ClientDisconnect above all: the reader fails with it
            self._failure = exc
        finally:
            self._put(None)

    def _ended(self) -> None:
        """At the queue's end: raise unless the whole body arrived."""
        if self._failure is not None:
            raise self._failure
        if not self._complete:
            raise EngineError(394, "Code: 394. DB::Exception: The request was cancelled "
                                   "before its body ended. (QUERY_WAS_CANCELLED)")

    def _take(self) -> list[bytes] | None:
        """The next batch, None at the queue's end; waits for it: for the reading thread."""
        with self._changed:
            while not self._queue and not self._closed:
                self._changed.wait()
            if not self._queue:
                return None
            batch = self._queue.popleft()
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody feeds any more
            self._loop.call_soon_threadsafe(self._room.release)
        return batch

    async def _take_async(self) -> list[bytes] | None:
        """``_take`` for the event loop."""
        while True:
            with self._changed:
                if self._queue:
                    self._room.release()
                    return self._queue.popleft()
                if self._closed:
                    return None
                arrived = self._arrived
            await arrived.wait()

    def _batches(self) -> Iterator[bytes]:
        while (batch := self._take()) is not None:
            yield batch[0] if len(batch) == 1 else b"".join(batch)
        self._ended()

    def _decode_error(self, exc: Exception) -> EngineError:
        if isinstance(exc, blocks.BlockError):
            return block_error(exc)
        return EngineError(354, f"Code: 354. DB::Exception: Cannot decompress the body "
                                f"({self._encoding}): {exc}. (CANNOT_DECOMPRESS)")

    def _through(self, decoder: codecs.Decoder, upstream: Iterator[bytes]) -> Iterator[bytes]:
        """``upstream`` decoded, each piece taken before the next is made (a bomb never
        expands in one go); only the decoder's own failures become the body's errors."""
        for data in upstream:
            produced = decoder.pieces(data)
            while True:
                try:
                    piece = next(produced, None)
                except Exception as exc:  # any codec's failure is the body's
                    raise self._decode_error(exc) from None
                if piece is None:
                    break
                yield piece
        try:
            decoder.finish()
        except ValueError as exc:
            raise self._decode_error(exc) from None

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (all the rest when negative), ``b""`` only at the end; waits
        for the body to arrive, so only for worker threads."""
        if self._pieces is None:
            pieces = self._batches()
            for decoder in self._decoders:
                pieces = self._through(decoder, pieces)
            self._pieces = pieces
        if size < 0:
            rest = b"".join([self._buffer, *self._pieces])
            self._buffer = b""
            return rest
        while not self._buffer:  # an empty native block is no end
            piece = next(self._pieces, None)
            if piece is None:
                return b""
            self._buffer = piece
        if len(self._buffer) <= size:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    def _read_at_least(self, size: int) -> bytes:
        parts: list[bytes] = []
        taken = 0
        while taken < size and (piece := self.read(size - taken)):
            parts.append(piece)
            taken += len(piece)
        return b"".join(parts)

    async def head(self, size: int) -> bytes:
        """The body's first bytes: at least ``size`` unless it is shorter, the rest left to
        ``read``."""
        if self._decoders or self._pieces is not None:
            return await to_thread.run_sync(self._read_at_least, size)
        parts: list[bytes] = []
        taken = 0
        while taken < size:
            batch = await self._take_async()
            if batch is None:
                self._ended()
                break
            parts.extend(batch)
            taken += sum(map(len, batch))
        return b"".join(parts)

    async def read_all(self, limit: int | None = None) -> bytes:
        """The rest of the body at once (a statement that takes it whole); QUERY_IS_TOO_LARGE
        as soon as more than ``limit`` bytes (decompressed) came, the rest never read."""
        if self._decoders or self._pieces is not None:
            return await to_thread.run_sync(self._read_up_to, limit)
        parts: list[bytes] = []
        taken = 0
        while (batch := await self._take_async()) is not None:
            parts.extend(batch)
            taken += sum(map(len, batch))
            if limit is not None and taken > limit:
                raise too_large(limit)
        self._ended()
        self._pieces = iter(())
        return b"".join(parts)

    def _read_up_to(self, limit: int | None) -> bytes:
        if limit is None:
            return self.read()
        parts: list[bytes] = []
        taken = 0
        while piece := self.read(1024 * 1024):
            parts.append(piece)
            taken += len(piece)
            if taken > limit:
                raise too_large(limit)
        return b"".join(parts)


def too_large(limit: int) -> EngineError:
    """A server's error for a query text longer than its ``max_query_size``."""
    return EngineError(229, f"Code: 229. DB::Exception: Query is too large (more than {limit} "
                            f"bytes left for its text). max_query_size = {limit}. "
                            "(QUERY_IS_TOO_LARGE)")

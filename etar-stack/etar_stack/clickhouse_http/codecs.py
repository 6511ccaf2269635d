"""HTTP body compression as ClickHouse speaks it: lz4 (frame), zstd, gzip, deflate, br.

Incremental in both directions so large bodies are never held twice in memory.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol, TypeAlias

import brotli
import lz4.frame
from backports import zstd

ENCODINGS = ("lz4", "zstd", "br", "gzip", "deflate")


STEP = 8 * 1024 * 1024
"""Most decompressed bytes produced at a time: a small body that expands to gigabytes (a
decompression bomb) is written out piece by piece, never held whole."""


class Decoder(Protocol):
    def pieces(self, data: bytes) -> Iterator[bytes]:
        """The output ``data`` completes, in pieces of at most ``STEP`` bytes; each must be
        taken before the next is made, and all of them before the next call."""

    def decompress(self, data: bytes) -> bytes:
        """All of the output ``data`` completes at once (for small, trusted inputs)."""

    def finish(self) -> None:
        """ValueError when the stream ended inside a frame (a truncated body)."""


class Encoder(Protocol):
    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Lz4Encoder:
    def __init__(self) -> None:
        self._codec = lz4.frame.LZ4FrameCompressor(auto_flush=True)
        self._header = self._codec.begin()

    def compress(self, data: bytes) -> bytes:
        out = self._header + self._codec.compress(data)
        self._header = b""
        return out

    def flush(self) -> bytes:
        return self._header + self._codec.flush()

    def sync(self) -> bytes:
        """What was compressed so far, decodable without the rest (the frame goes on)."""
        return b""  # auto_flush: every compress() already emits whole blocks


class _BrotliEncoder:
    def __init__(self) -> None:
        self._codec = brotli.Compressor()

    def compress(self, data: bytes) -> bytes:
        return bytes(self._codec.process(data))

    def flush(self) -> bytes:
        return bytes(self._codec.finish())

    def sync(self) -> bytes:
        return bytes(self._codec.flush())


def _truncated(encoding: str) -> ValueError:
    return ValueError(f"the {encoding} stream ends inside a frame (a truncated body)")


class _BrotliDecoder:
    def __init__(self) -> None:
        self._codec = brotli.Decompressor()

    def pieces(self, data: bytes) -> Iterator[bytes]:
        codec, limit = self._codec, STEP // 2  # the buffer may outgrow it, to under twice
        out = codec.process(data, output_buffer_limit=limit)
        while True:
            if out:
                yield bytes(out)
            held = not codec.can_accept_more_data() or len(out) >= limit
            if not held or codec.is_finished():
                return
            out = codec.process(b"", output_buffer_limit=limit)

    def decompress(self, data: bytes) -> bytes:
        return b"".join(self.pieces(data))

    def finish(self) -> None:
        if not self._codec.is_finished():
            raise _truncated("br")


if TYPE_CHECKING:
    _Frames: TypeAlias = (lz4.frame.LZ4FrameDecompressor | zstd.ZstdDecompressor
                          | zlib._Decompress)


class _FrameDecoder:
    """lz4 frames, zstd frames or zlib streams (gzip members, deflate streams), several in a
    row as a streaming client may send them; the last one's end must arrive."""

    def __init__(self, new: Callable[[], _Frames], encoding: str) -> None:
        self._new, self._encoding = new, encoding
        self._codec = new()
        self._fed = False
        """Whether the current frame got any input (an empty body is no truncated frame)."""

    def pieces(self, data: bytes) -> Iterator[bytes]:
        codec = self._codec
        while True:
            if codec.eof:  # the next frame starts with what the last one left over
                data = bytes(codec.unused_data or b"") + data
                if not data:
                    return
                codec = self._codec = self._new()
                self._fed = False
            self._fed = self._fed or bool(data)
            out = codec.decompress(data, STEP)
            if isinstance(codec, (lz4.frame.LZ4FrameDecompressor, zstd.ZstdDecompressor)):
                data = b""  # lz4 and zstd keep unused input and say if output is held back
                more = not codec.needs_input
            else:  # zlib hands back the input it left; a full piece may have more behind it
                data = codec.unconsumed_tail
                more = bool(data) or len(out) == STEP
            if out:
                yield bytes(out)
            if codec.eof:
                data = b""  # what follows the frame is in unused_data (zlib has it twice)
            elif not more:
                return

    def decompress(self, data: bytes) -> bytes:
        return b"".join(self.pieces(data))

    def finish(self) -> None:
        if self._fed and not self._codec.eof:
            raise _truncated(self._encoding)


class _ZstdEncoder:
    def __init__(self) -> None:
        self._codec = zstd.ZstdCompressor()

    def compress(self, data: bytes) -> bytes:
        return bytes(self._codec.compress(data))

    def flush(self) -> bytes:
        return bytes(self._codec.flush(zstd.ZstdCompressor.FLUSH_FRAME))

    def sync(self) -> bytes:
        return bytes(self._codec.flush(zstd.ZstdCompressor.FLUSH_BLOCK))


def decoder(encoding: str) -> Decoder:
    """An incremental decompressor for a ``Content-Encoding`` value."""
    encoding = encoding.strip().lower()
    if encoding == "lz4":
        return _FrameDecoder(lz4.frame.LZ4FrameDecompressor, encoding)
    if encoding == "zstd":
        return _FrameDecoder(zstd.ZstdDecompressor, encoding)
    if encoding == "br":
        return _BrotliDecoder()
    if encoding in ("gzip", "x-gzip"):
        return _FrameDecoder(lambda: zlib.decompressobj(wbits=31), "gzip")
    if encoding == "deflate":
        return _FrameDecoder(zlib.decompressobj, encoding)
    raise ValueError(f"Unknown Content-Encoding: {encoding}")


def encoder(encoding: str) -> Encoder:
    """An incremental compressor for a negotiated response encoding."""
    if encoding == "lz4":
        return _Lz4Encoder()
    if encoding == "zstd":
        return _ZstdEncoder()
    if encoding == "br":
        return _BrotliEncoder()
    if encoding == "gzip":
        return zlib.compressobj(wbits=31)
    if encoding == "deflate":
        return zlib.compressobj()
    raise ValueError(f"Unknown encoding: {encoding}")


def negotiate(accept_encoding: str) -> str | None:
    """The first encoding of ``Accept-Encoding`` that we can produce, in the client's order."""
    for item in accept_encoding.split(","):
        name = item.split(";")[0].strip().lower()
        if name in ENCODINGS:
            return name
    return None

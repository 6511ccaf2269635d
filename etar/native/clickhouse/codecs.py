"""HTTP body compression as ClickHouse speaks it: lz4 (frame), zstd, gzip, deflate, br.

Incremental in both directions so large bodies are never held twice in memory.
"""

from __future__ import annotations

import zlib
from typing import Protocol

import brotli
import lz4.frame
from backports import zstd

ENCODINGS = ("lz4", "zstd", "br", "gzip", "deflate")


class Decoder(Protocol):
    def decompress(self, data: bytes) -> bytes: ...

    def finish(self) -> None:
        """ValueError when the stream ended inside a frame (a truncated body)."""


class Encoder(Protocol):
    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Lz4Encoder:
    def __init__(self) -> None:
        self._codec = lz4.frame.LZ4FrameCompressor()
        self._header = self._codec.begin()

    def compress(self, data: bytes) -> bytes:
        out = self._header + self._codec.compress(data)
        self._header = b""
        return out

    def flush(self) -> bytes:
        return self._header + self._codec.flush()


class _BrotliEncoder:
    def __init__(self) -> None:
        self._codec = brotli.Compressor()

    def compress(self, data: bytes) -> bytes:
        return bytes(self._codec.process(data))

    def flush(self) -> bytes:
        return bytes(self._codec.finish())


def _truncated(encoding: str) -> ValueError:
    return ValueError(f"the {encoding} stream ends inside a frame (a truncated body)")


class _BrotliDecoder:
    def __init__(self) -> None:
        self._codec = brotli.Decompressor()

    def decompress(self, data: bytes) -> bytes:
        return bytes(self._codec.process(data))

    def finish(self) -> None:
        if not self._codec.is_finished():
            raise _truncated("br")


class _FrameDecoder:
    """lz4 frames or zlib streams (gzip, deflate): one frame, whose end must arrive."""

    def __init__(self, codec: lz4.frame.LZ4FrameDecompressor | zlib._Decompress,
                 encoding: str) -> None:
        self._codec = codec
        self._encoding = encoding
        self._started = False

    def decompress(self, data: bytes) -> bytes:
        self._started = self._started or bool(data)
        return bytes(self._codec.decompress(data))

    def finish(self) -> None:
        if self._started and not self._codec.eof:
            raise _truncated(self._encoding)


class _ZstdEncoder:
    def __init__(self) -> None:
        self._codec = zstd.ZstdCompressor()

    def compress(self, data: bytes) -> bytes:
        return bytes(self._codec.compress(data))

    def flush(self) -> bytes:
        return bytes(self._codec.flush(zstd.ZstdCompressor.FLUSH_FRAME))


class _ZstdDecoder:
    """Handles several concatenated frames, as a streaming client may send."""

    def __init__(self) -> None:
        self._codec = zstd.ZstdDecompressor()
        self._in_frame = False

    def decompress(self, data: bytes) -> bytes:
        out = bytearray()
        while data:
            self._in_frame = True
            out += self._codec.decompress(data)
            if not self._codec.eof:
                break
            data = self._codec.unused_data
            self._codec = zstd.ZstdDecompressor()
            self._in_frame = False
        return bytes(out)

    def finish(self) -> None:
        if self._in_frame:
            raise _truncated("zstd")


def decoder(encoding: str) -> Decoder:
    """An incremental decompressor for a ``Content-Encoding`` value."""
    encoding = encoding.strip().lower()
    if encoding == "lz4":
        return _FrameDecoder(lz4.frame.LZ4FrameDecompressor(), encoding)
    if encoding == "zstd":
        return _ZstdDecoder()
    if encoding == "br":
        return _BrotliDecoder()
    if encoding in ("gzip", "x-gzip"):
        return _FrameDecoder(zlib.decompressobj(wbits=31), "gzip")
    if encoding == "deflate":
        return _FrameDecoder(zlib.decompressobj(), encoding)
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

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


class _BrotliDecoder:
    def __init__(self) -> None:
        self._codec = brotli.Decompressor()

    def decompress(self, data: bytes) -> bytes:
        return bytes(self._codec.process(data))


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

    def decompress(self, data: bytes) -> bytes:
        out = bytearray()
        while data:
            out += self._codec.decompress(data)
            if not self._codec.eof:
                break
            data = self._codec.unused_data
            self._codec = zstd.ZstdDecompressor()
        return bytes(out)


def decoder(encoding: str) -> Decoder:
    """An incremental decompressor for a ``Content-Encoding`` value."""
    encoding = encoding.strip().lower()
    if encoding == "lz4":
        return lz4.frame.LZ4FrameDecompressor()  # type: ignore[no-any-return]
    if encoding == "zstd":
        return _ZstdDecoder()
    if encoding == "br":
        return _BrotliDecoder()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(wbits=31)
    if encoding == "deflate":
        return zlib.decompressobj()
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

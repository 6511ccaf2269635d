"""ClickHouse's native block compression, as its HTTP interface speaks it (``compress=1`` /
``decompress=1``).

A stream is a sequence of blocks: a 16-byte checksum (CityHash128 of ClickHouse's 1.0.2
flavour, low 64 bits first, both little-endian) of what follows, then a 9-byte header — the
method byte, the block's size with the header and the uncompressed size (UInt32 LE each) —
then the payload. Methods: none (0x02), LZ4 (0x82, a raw LZ4 block), ZSTD (0x90, a frame).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import lz4.block
from backports import zstd
from clickhouse_cityhash.cityhash import CityHash128

NONE, LZ4, ZSTD = 0x02, 0x82, 0x90
METHODS = {"none": NONE, "lz4": LZ4, "lz4hc": LZ4, "zstd": ZSTD}
"""``network_compression_method`` values and their method bytes."""
CHECKSUM_SIZE, HEADER_SIZE = 16, 9
BLOCK_SIZE = 1024 * 1024
"""Uncompressed bytes per block written (ClickHouse's default buffer size)."""
MAX_BLOCK_SIZE = 1024 * 1024 * 1024
"""Sizes above this in a header are taken as corruption, not allocated."""
_HEADER = struct.Struct("<BII")
_LOW = (1 << 64) - 1


class BlockError(ValueError):
    """A malformed stream; ``code`` and ``name`` are ClickHouse's for it."""

    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(message)
        self.code, self.name = code, name


def checksum(data: bytes | memoryview) -> bytes:
    """ClickHouse's block checksum of ``data`` (header and payload)."""
    value = int(CityHash128(bytes(data)))  # (low 64 bits << 64) | high 64 bits
    return (value >> 64).to_bytes(8, "little") + (value & _LOW).to_bytes(8, "little")


def compress_block(data: bytes, method: int = LZ4) -> bytes:
    """One checksummed block holding ``data``."""
    if method == LZ4:
        payload = lz4.block.compress(data, store_size=False)
    elif method == ZSTD:
        payload = zstd.compress(data)
    elif method == NONE:
        payload = data
    else:
        raise BlockError(89, "UNKNOWN_COMPRESSION_METHOD", f"Unknown compression method {method}")
    block = _HEADER.pack(method, HEADER_SIZE + len(payload), len(data)) + payload
    return checksum(block) + block


def _zstd_block(payload: bytes, size: int) -> bytes:
    """A zstd payload that must expand to exactly ``size`` bytes (the header's word), never
    decompressed past it."""
    out = bytearray()
    while payload:
        codec = zstd.ZstdDecompressor()
        out += codec.decompress(payload, max(size - len(out), 1))  # 1: to see a surplus
        if not codec.eof:
            break  # more output than declared, or a cut frame
        payload = codec.unused_data
    if len(out) != size or payload:
        raise BlockError(271, "CANNOT_DECOMPRESS",
                         "Cannot decompress ZSTD-encoded data: the block does not expand to "
                         f"its declared uncompressed size {size}")
    return bytes(out)


def _decompress(method: int, payload: bytes, size: int) -> bytes:
    try:
        if method == LZ4:
            data = bytes(lz4.block.decompress(payload, uncompressed_size=size))
            if len(data) != size:
                raise BlockError(271, "CANNOT_DECOMPRESS",
                                 "Cannot decompress LZ4-encoded data: the block does not expand "
                                 f"to its declared uncompressed size {size}")
            return data
        if method == ZSTD:
            return _zstd_block(payload, size)
    except BlockError:
        raise
    except Exception as exc:
        raise BlockError(271, "CANNOT_DECOMPRESS", f"Cannot decompress a block: {exc}") from None
    if method == NONE:
        return payload
    raise BlockError(89, "UNKNOWN_COMPRESSION_METHOD",
                     f"Unknown compression method: {method:#04x}")


class BlockDecoder:
    """Incremental reader of a block stream: ``decompress`` pieces, then ``finish``."""

    def __init__(self, verify: bool = True) -> None:
        self._pending = b""
        self._verify = verify

    def decompress(self, data: bytes) -> bytes:
        """The data of every block completed by ``data`` at once (for small, trusted input)."""
        return b"".join(self.pieces(data))

    def pieces(self, data: bytes) -> Iterator[bytes]:
        """The data of each block completed by ``data``, one block at a time (each at most
        ``MAX_BLOCK_SIZE``, as declared in its header); checksums verified."""
        buffer = self._pending + data if self._pending else data
        start = 0
        while len(buffer) - start >= CHECKSUM_SIZE + HEADER_SIZE:
            method, size, raw = _HEADER.unpack_from(buffer, start + CHECKSUM_SIZE)
            if size < HEADER_SIZE or size > MAX_BLOCK_SIZE or raw > MAX_BLOCK_SIZE:
                raise BlockError(271, "CANNOT_DECOMPRESS",
                                 f"Too large size of a compressed block: {size}")
            end = start + CHECKSUM_SIZE + size
            if len(buffer) < end:
                break
            reference = buffer[start:start + CHECKSUM_SIZE]
            block = buffer[start + CHECKSUM_SIZE:end]
            if self._verify and (actual := checksum(block)) != reference:
                raise BlockError(
                    40, "CHECKSUM_DOESNT_MATCH",
                    f"Checksum doesn't match: corrupted data. Reference: {reference.hex()}. "
                    f"Actual: {actual.hex()}. Size of compressed block: {size}")
            start = end
            yield _decompress(method, block[HEADER_SIZE:], raw)
        self._pending = buffer[start:]

    def finish(self) -> None:
        """Raise when the stream ended inside a block."""
        if self._pending:
            raise BlockError(33, "CANNOT_READ_ALL_DATA",
                             f"Cannot read all data: the body ends {len(self._pending)} bytes "
                             "into a compressed block")


class BlockEncoder:
    """Incremental writer of a block stream (``codecs.Encoder``'s shape)."""

    def __init__(self, method: int = LZ4, block_size: int = BLOCK_SIZE) -> None:
        self._method, self._size = method, block_size
        self._pending = bytearray()

    def compress(self, data: bytes) -> bytes:
        self._pending += data
        out = bytearray()
        while len(self._pending) >= self._size:
            out += compress_block(bytes(self._pending[:self._size]), self._method)
            del self._pending[:self._size]
        return bytes(out)

    def flush(self) -> bytes:
        out = compress_block(bytes(self._pending), self._method) if self._pending else b""
        self._pending.clear()
        return out

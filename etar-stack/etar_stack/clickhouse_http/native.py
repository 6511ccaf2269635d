"""Native output as a ClickHouse server of a given client protocol revision writes it.

The engine writes Native as for revision 0: per block, the column and row counts, then per
column its name, type and data. A client that sends ``client_protocol_version`` (clickhouse-go
over HTTP) reads more: block info before the counts (from revision 51903) and, after each
column's type, whether it has a custom serialization (from 54454; always 0 here, the engine
never writes sparse columns). Adding them means finding where each column's data ends, so the
data is walked by type (numbers, strings, Nullable, Array, Map, Tuple, LowCardinality, …);
a type it cannot walk is an error, not a guess.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

BLOCK_INFO_REVISION = 51903
CUSTOM_SERIALIZATION_REVISION = 54454
_BLOCK_INFO = b"\x01\x00\x02\xff\xff\xff\xff\x00"
"""Field 1 ``is_overflows`` = 0, field 2 ``bucket_num`` = -1, end."""
_FIXED = {
    **dict.fromkeys(("UInt8", "Int8", "Bool", "Enum8"), 1),
    **dict.fromkeys(("UInt16", "Int16", "Enum16", "Date", "BFloat16"), 2),
    **dict.fromkeys(("UInt32", "Int32", "Float32", "DateTime", "Date32", "IPv4", "Decimal32",
                     "Time"), 4),
    **dict.fromkeys(("UInt64", "Int64", "Float64", "DateTime64", "Decimal64", "Time64"), 8),
    **dict.fromkeys(("UInt128", "Int128", "UUID", "IPv6", "Decimal128"), 16),
    **dict.fromkeys(("UInt256", "Int256", "Decimal256"), 32),
}
_LC_ADDITIONAL_KEYS = 1 << 9
_U64 = struct.Struct("<Q")


class Incomplete(Exception):
    """The buffer ends inside a block."""


class Unsupported(ValueError):
    """A column type whose data cannot be walked here."""


@dataclass(frozen=True)
class Type:
    """A parsed type name: ``Array(Nullable(String))`` → Array[Nullable[String]]."""

    name: str
    args: tuple[Type, ...] = ()
    params: tuple[str, ...] = ()


def _split(text: str) -> list[str]:
    parts, depth, quote, start = [], 0, False, 0
    for i, char in enumerate(text):
        if quote:
            if char == "\\":
                continue
            if char == "'" and text[i - 1] != "\\":
                quote = False
        elif char == "'":
            quote = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


_NAMED = re.compile(r"^[A-Za-z_][\w]*\s+(?=[A-Z])")


def parse_type(text: str) -> Type:
    """Parse a ClickHouse type name (named tuple elements lose their names)."""
    text = text.strip()
    paren = text.find("(")
    if paren < 0 or not text.endswith(")"):
        return Type(text)
    name, inner = text[:paren], text[paren + 1:-1]
    parts = _split(inner)
    if name in ("Tuple", "Nested", "Array", "Nullable", "LowCardinality", "Map"):
        return Type(name, tuple(parse_type(_NAMED.sub("", part, count=1)) for part in parts))
    if name == "SimpleAggregateFunction":
        return parse_type(parts[-1])
    return Type(name, (), tuple(parts))


def _decimal_size(kind: Type) -> int:
    precision = int(kind.params[0])
    return 4 if precision <= 9 else 8 if precision <= 18 else 16 if precision <= 38 else 32


class _Reader:
    def __init__(self, data: bytes | memoryview, pos: int = 0) -> None:
        self.data, self.pos = data, pos

    def need(self, size: int) -> int:
        start = self.pos
        if start + size > len(self.data):
            raise Incomplete
        self.pos += size
        return start

    def varint(self) -> int:
        shift = value = 0
        while True:
            byte = self.data[self.need(1)]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def string(self) -> bytes:
        size = self.varint()
        start = self.need(size)
        return bytes(self.data[start:start + size])

    def u64(self) -> int:
        return int(_U64.unpack_from(self.data, self.need(8))[0])


def _skip_prefix(reader: _Reader, kind: Type) -> None:
    if kind.name == "LowCardinality":
        reader.need(8)  # the keys' serialization version
    for arg in kind.args:
        _skip_prefix(reader, arg)


def _skip_data(reader: _Reader, kind: Type, rows: int) -> None:
    name = kind.name
    if name in _FIXED or name.startswith("Interval"):
        reader.need(_FIXED.get(name, 8) * rows)
    elif name == "Decimal":
        reader.need(_decimal_size(kind) * rows)
    elif name == "FixedString":
        reader.need(int(kind.params[0]) * rows)
    elif name == "String":
        for _ in range(rows):
            reader.need(reader.varint())
    elif name == "Nothing":
        reader.need(rows)
    elif name == "Nullable":
        reader.need(rows)
        _skip_data(reader, kind.args[0], rows)
    elif name in ("Array", "Map", "Nested"):
        values = 0
        if rows:
            start = reader.need(8 * rows)
            values = _U64.unpack_from(reader.data, start + 8 * (rows - 1))[0]
        inner = kind.args[0] if name == "Array" else Type("Tuple", kind.args)
        _skip_data(reader, inner, values)
    elif name == "Tuple":
        for arg in kind.args:
            _skip_data(reader, arg, rows)
    elif name == "LowCardinality":
        keys = kind.args[0]
        if keys.name == "Nullable":
            keys = keys.args[0]
        done = 0
        while done < rows:
            flags = reader.u64()
            if flags & _LC_ADDITIONAL_KEYS:
                _skip_data(reader, keys, reader.u64())
            count = reader.u64()
            reader.need(count << (flags & 0xFF))
            done += count
    else:
        raise Unsupported(f"Native output of {name} for client_protocol_version")


class Shaper:
    """Rewrites revision-0 Native blocks for ``revision``, across chunk boundaries."""

    def __init__(self, revision: int) -> None:
        self.revision = revision
        self._pending = b""
        self._types: dict[bytes, Type] = {}

    def _kind(self, name: bytes) -> Type:
        if name not in self._types:
            self._types[name] = parse_type(name.decode())
        return self._types[name]

    def __call__(self, data: bytes) -> bytes:
        """The blocks completed by ``data``, reshaped (a trailing partial block is kept)."""
        buffer = self._pending + data if self._pending else data
        out = bytearray()
        pos = 0
        while pos < len(buffer):
            try:
                pos = self._block(buffer, pos, out)
            except Incomplete:
                break
        self._pending = buffer[pos:]
        return bytes(out)

    def _block(self, data: bytes, pos: int, out: bytearray) -> int:
        reader = _Reader(data, pos)
        columns, rows = reader.varint(), reader.varint()
        block = bytearray()
        if self.revision >= BLOCK_INFO_REVISION:
            block += _BLOCK_INFO
        block += data[pos:reader.pos]
        for _ in range(columns):
            start = reader.pos
            reader.string()
            kind = self._kind(reader.string())
            block += data[start:reader.pos]
            if self.revision >= CUSTOM_SERIALIZATION_REVISION:
                block.append(0)
            start = reader.pos
            if rows:
                _skip_prefix(reader, kind)
                _skip_data(reader, kind, rows)
            block += data[start:reader.pos]
        out += block
        return reader.pos

    def finish(self) -> None:
        """Raise when a partial block is left over."""
        if self._pending:
            raise Unsupported("Native output ends inside a block")

"""Native output as a ClickHouse server of a given client protocol revision writes it.

The engine writes Native as for revision 0: per block, the column and row counts, then per
column its name, type and data. A client that sends ``client_protocol_version`` (clickhouse-go
over HTTP) reads more: block info before the counts (from revision 51903) and, after each
column's type, whether it has a custom serialization (from 54454; always 0 here, the engine
never writes sparse columns). Adding them means finding where each column's data ends, so the
data is walked by type (numbers, strings, Nullable, Array, Map, Tuple, LowCardinality, Variant,
Dynamic and JSON by the types their prefix names, QBit as its bit planes, geo types as their
storage); a type it cannot walk (an aggregate function's state, Variant's compact
discriminators) is an error, not a guess. ``DateTime`` gets back its time zone (``describe``).
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from dataclasses import dataclass

TIME_ZONE_REVISION = 54337
"""From this revision a server names ``DateTime``'s time zone (``DateTime('Asia/Tokyo')``);
for older clients, and so in the engine's own Native output, it writes a bare ``DateTime``."""
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


_NAMED = re.compile(r"^(?:`(?:[^`\\]|\\.)*`|[A-Za-z_][\w.]*)\s+(?=[A-Z])")
"""A named tuple element's (or a JSON typed path's) name before its type."""
_GEO = {"Point": "Tuple(Float64, Float64)", "Ring": "Array(Point)", "LineString": "Array(Point)",
        "Polygon": "Array(Ring)", "MultiLineString": "Array(LineString)",
        "MultiPolygon": "Array(Polygon)"}
"""Geo types: aliases of their storage types (the Native layout is the storage's)."""
_QBIT_BITS = {"BFloat16": 16, "Float32": 32, "Float64": 64}
_WITH_TYPES = ("Tuple", "Nested", "Array", "Nullable", "LowCardinality", "Map", "Variant")
_STRING = Type("String")
_SHARED_DATA = Type("Array", (Type("Tuple", (_STRING, _STRING)),))
"""A JSON column's shared data: (path, value) pairs per row."""


def parse_type(text: str) -> Type:
    """Parse a ClickHouse type name (named tuple elements lose their names)."""
    text = text.strip()
    if text in _GEO:
        return parse_type(_GEO[text])
    paren = text.find("(")
    if paren < 0 or not text.endswith(")"):
        return Type(text)
    name, inner = text[:paren], text[paren + 1:-1]
    parts = _split(inner)
    if name in _WITH_TYPES:
        return Type(name, tuple(parse_type(_NAMED.sub("", part, count=1)) for part in parts))
    if name == "SimpleAggregateFunction":
        return parse_type(parts[-1])
    if name == "QBit":  # one bit plane per bit of the element, a bit per dimension in each
        bits, width = _QBIT_BITS.get(parts[0]), (int(parts[1]) + 7) // 8
        if bits is None:
            raise Unsupported(f"Native output of QBit({parts[0]}) for client_protocol_version")
        return Type("Tuple", (Type("FixedString", (), (str(width),)),) * bits)
    return Type(name, (), tuple(parts))


def _typed_paths(kind: Type) -> list[Type]:
    """A JSON type's typed paths (``JSON(a UInt32, max_dynamic_paths=8)``), in path order."""
    paths = []
    for part in kind.params:
        named = _NAMED.match(part)
        if named and not part.upper().startswith("SKIP "):
            paths.append((named.group(0).strip().strip("`"), parse_type(part[named.end():])))
    return [path_type for _, path_type in sorted(paths, key=lambda item: item[0])]


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


def _prefix(reader: _Reader, kind: Type) -> Type:
    """Read a column's serialization prefix; the type its data is then laid out as
    (``Dynamic`` and ``JSON`` name their actual types in the prefix)."""
    name = kind.name
    if name == "LowCardinality":
        reader.need(8)  # the keys' serialization version
    elif name == "Variant":
        _discriminators_mode(reader)
    elif name == "Dynamic":
        version = reader.u64()  # structure V1 (with the most types) or V2
        if version == 1:
            reader.varint()
        elif version != 2:
            raise Unsupported(f"Native output of Dynamic structure version {version}")
        names = [reader.string().decode() for _ in range(reader.varint())]
        return _prefix(reader, Type("Variant", tuple(
            Type("SharedVariant") if item == "SharedVariant" else parse_type(item)
            for item in sorted([*names, "SharedVariant"]))))
    elif name == "JSON":
        version = reader.u64()  # object V1 (0, with the most dynamic paths) or V2 (2)
        if version == 0:
            reader.varint()
        elif version != 2:
            raise Unsupported(f"Native output of JSON serialization version {version}")
        dynamic = [reader.string() for _ in range(reader.varint())]
        typed = [_prefix(reader, path_type) for path_type in _typed_paths(kind)]
        paths = [_prefix(reader, Type("Dynamic")) for _ in dynamic]
        return Type("Tuple", (*typed, *paths, _SHARED_DATA))
    if kind.args:
        return Type(name, tuple(_prefix(reader, arg) for arg in kind.args), kind.params)
    return kind


def _discriminators_mode(reader: _Reader) -> None:
    mode = reader.u64()
    if mode != 0:  # 1: compact, discriminators per granule
        raise Unsupported(f"Native output of Variant discriminators mode {mode}")


def _skip_data(reader: _Reader, kind: Type, rows: int) -> None:
    name = kind.name
    if name in _FIXED or name.startswith("Interval"):
        reader.need(_FIXED.get(name, 8) * rows)
    elif name == "Decimal":
        reader.need(_decimal_size(kind) * rows)
    elif name == "FixedString":
        reader.need(int(kind.params[0]) * rows)
    elif name in ("String", "SharedVariant"):
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
        if not kind.args:  # an empty tuple: a placeholder byte per row
            reader.need(rows)
        for arg in kind.args:
            _skip_data(reader, arg, rows)
    elif name == "Variant":  # a discriminator per row (255: NULL), then each variant's rows
        start = reader.need(rows)
        counts = Counter(reader.data[start:start + rows])
        for index, arg in enumerate(kind.args):
            _skip_data(reader, arg, counts.get(index, 0))
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


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class Shaper:
    """Rewrites revision-0 Native blocks for ``revision``, across chunk boundaries."""

    def __init__(self, revision: int) -> None:
        self.revision = revision
        self._pending = b""
        self._types: dict[bytes, Type] = {}
        self.columns: list[str] = []
        """The result's column types as the engine names them (``describe``), if known."""

    def describe(self, types: list[str]) -> None:
        """Learn the result's column types, so ``DateTime`` keeps its time zone."""
        self.columns = types

    def _type_name(self, index: int, written: bytes) -> bytes | None:
        """The type name a server of this revision writes where the engine wrote ``written``,
        None when it is the same."""
        if (written == b"DateTime" and self.revision >= TIME_ZONE_REVISION
                and index < len(self.columns) and self.columns[index].startswith("DateTime(")):
            return self.columns[index].encode()
        return None

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
        for index in range(columns):
            start = reader.pos
            reader.string()
            middle = reader.pos
            written = reader.string()
            kind = self._kind(written)
            named = self._type_name(index, written)
            if named is None:
                block += data[start:reader.pos]
            else:
                block += data[start:middle] + _varint(len(named)) + named
            if self.revision >= CUSTOM_SERIALIZATION_REVISION:
                block.append(0)
            start = reader.pos
            if rows:
                _skip_data(reader, _prefix(reader, kind), rows)
            block += data[start:reader.pos]
        out += block
        return reader.pos

    def finish(self) -> None:
        """Raise when a partial block is left over."""
        if self._pending:
            raise Unsupported("Native output ends inside a block")

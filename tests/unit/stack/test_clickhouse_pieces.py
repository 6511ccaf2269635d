"""Pure pieces of the ClickHouse HTTP endpoint: statement parsing, body codecs, native block
compression and Native reshaping (request bodies: ``test_clickhouse_body``)."""

from __future__ import annotations

import os
import struct

import pytest
from clickhouse_cityhash.cityhash import CityHash128

from etar_stack.clickhouse_http import blocks, codecs, native
from etar_stack.clickhouse_http.engine import Engine, EngineError, first_keyword
from etar_stack.clickhouse_http.server import _FORMAT, _INSERT


@pytest.mark.parametrize("sql, keyword", [
    ("SELECT 1", "SELECT"), ("  with x as (select 1) select * from x", "WITH"),
    ("-- comment\nINSERT INTO t VALUES (1)", "INSERT"), ("/* c */ show tables", "SHOW"),
    ("(SELECT 1)", "("), ("", ""),
])
def test_first_keyword(sql: str, keyword: str) -> None:
    assert first_keyword(sql) == keyword


def test_insert_with_format_splits_statement_and_inline_data() -> None:
    match = _INSERT.match(b"INSERT INTO db.t (a, b) FORMAT CSV\n1,2\n")
    assert match is not None
    assert match.group(1) == b"INSERT INTO db.t (a, b)" and match.group(2) == b"CSV"
    assert b"INSERT INTO db.t (a, b) FORMAT CSV\n1,2\n"[match.end():] == b"1,2\n"
    assert _INSERT.match(b"INSERT INTO t SELECT 1") is None


def test_trailing_format_clause() -> None:
    match = _FORMAT.search("SELECT * FROM t WHERE x = 1 FORMAT Native")
    assert match is not None and match.group(1) == "Native"
    assert _FORMAT.search("SELECT 'FORMAT' AS f") is None


def test_engine_errors_keep_clickhouse_codes() -> None:
    error = EngineError.from_engine(RuntimeError(
        "Streaming query failed: Code: 60. DB::Exception: Unknown table. (UNKNOWN_TABLE)"))
    assert error.code == 60 and error.message.startswith("Code: 60.")
    assert EngineError.from_engine(RuntimeError("boom")).code == 1001


@pytest.mark.parametrize("encoding", codecs.ENCODINGS)
def test_codecs_round_trip_in_pieces(encoding: str) -> None:
    data = os.urandom(50_000) + b"abc" * 100_000
    encoder = codecs.encoder(encoding)
    compressed = b"".join(encoder.compress(data[i:i + 7_000]) for i in range(0, len(data), 7_000))
    compressed += encoder.flush()
    decoder = codecs.decoder(encoding)
    restored = b"".join(decoder.decompress(compressed[i:i + 999])
                        for i in range(0, len(compressed), 999))
    assert restored == data


def test_negotiate_takes_the_clients_first_known_encoding() -> None:
    assert codecs.negotiate("identity, zstd;q=0.9, gzip") == "zstd"
    assert codecs.negotiate("identity") is None


def test_native_blocks_round_trip_in_pieces_and_checksums() -> None:
    data = os.urandom(3_000) + b"abc" * 500_000
    for method in (blocks.LZ4, blocks.ZSTD, blocks.NONE):
        encoder = blocks.BlockEncoder(method, block_size=100_000)
        stream = encoder.compress(data) + encoder.flush()
        decoder = blocks.BlockDecoder()
        out = b"".join(decoder.decompress(stream[i:i + 7_777])
                       for i in range(0, len(stream), 7_777))
        decoder.finish()
        assert out == data


def test_native_blocks_reject_a_wrong_checksum_and_a_cut_stream() -> None:
    block = bytearray(blocks.compress_block(b"payload" * 100))
    block[5] ^= 1
    with pytest.raises(blocks.BlockError) as wrong:
        blocks.BlockDecoder().decompress(bytes(block))
    assert wrong.value.code == 40 and wrong.value.name == "CHECKSUM_DOESNT_MATCH"
    assert blocks.BlockDecoder(verify=False).decompress(bytes(block)) == b"payload" * 100
    cut = blocks.BlockDecoder()
    assert cut.decompress(blocks.compress_block(b"x" * 100)[:-1]) == b""
    with pytest.raises(blocks.BlockError) as short:
        cut.finish()
    assert short.value.code == 33


def test_checksum_is_low_half_first() -> None:
    value = int(CityHash128(b"abc"))
    assert blocks.checksum(b"abc") == struct.pack("<QQ", value >> 64, value & (2**64 - 1))


REVISION_0 = (b"\x02\x02"  # 2 columns, 2 rows
              b"\x01a\x05UInt8" b"\x01\x02"
              b"\x01b\x16LowCardinality(String)" + struct.pack("<QQQ", 1, 0x600, 2)
              + b"\x00\x01z" + struct.pack("<Q", 2) + b"\x01\x00")


def test_native_shaper_adds_block_info_and_serialization_kinds_across_chunks() -> None:
    shaper = native.Shaper(54460)
    stream = REVISION_0 * 2
    out = b"".join(shaper(stream[i:i + 5]) for i in range(0, len(stream), 5))
    shaper.finish()
    block = (b"\x01\x00\x02\xff\xff\xff\xff\x00" b"\x02\x02" b"\x01a\x05UInt8\x00\x01\x02"
             b"\x01b\x16LowCardinality(String)\x00" + REVISION_0[REVISION_0.index(b")") + 1:])
    assert out == block * 2
    assert native.Shaper(51903)(REVISION_0) == b"\x01\x00\x02\xff\xff\xff\xff\x00" + REVISION_0


def test_native_shaper_refuses_types_it_cannot_walk() -> None:
    with pytest.raises(native.Unsupported):
        native.Shaper(54460)(b"\x01\x01\x01s\x1fAggregateFunction(uniq, UInt64)\x00")
    compact = b"\x01\x01\x01v\x17Variant(String, UInt64)" + struct.pack("<Q", 1) + b"\x00"
    with pytest.raises(native.Unsupported, match="mode 1"):
        native.Shaper(54460)(compact)


def test_type_names_parse_as_their_layout() -> None:
    parse = native.parse_type
    assert parse("Point") == parse("Tuple(Float64, Float64)")
    assert parse("MultiPolygon") == parse("Array(Array(Array(Tuple(Float64, Float64))))")
    assert parse("Tuple(`a b` Nullable(String), c.d UInt8)") == parse(
        "Tuple(Nullable(String), UInt8)")
    qbit = parse("QBit(Float32, 9)")
    assert qbit.name == "Tuple" and len(qbit.args) == 32
    assert qbit.args[0] == native.Type("FixedString", (), ("2",))


@pytest.mark.parametrize("encoding", codecs.ENCODINGS)
def test_a_truncated_body_is_refused_not_half_read(encoding: str) -> None:
    encoder = codecs.encoder(encoding)
    compressed = encoder.compress(os.urandom(20_000)) + encoder.flush()
    whole = codecs.decoder(encoding)
    whole.decompress(compressed)
    whole.finish()  # a complete stream ends cleanly
    cut = codecs.decoder(encoding)
    cut.decompress(compressed[: len(compressed) // 2])
    with pytest.raises(ValueError, match="truncated"):
        cut.finish()


NEWER_TYPES = [
    "SELECT arrayJoin([1::Variant(UInt64, String), 'a'::Variant(UInt64, String), NULL]) AS v",
    "SELECT arrayJoin([1::Dynamic, 'a'::Dynamic, NULL::Dynamic, [1, 2]::Dynamic]) AS d",
    "SELECT arrayJoin(['{\"a\":1,\"b\":{\"c\":\"x\"}}', '{\"a\":[2]}'])::JSON(z UInt8) AS j, "
    "1 AS n",
    "SELECT [1.0, 2.0, 3.0]::QBit(Float32, 3) AS q, [[(1.0, 2.0)]]::Polygon AS p",
    "SELECT CAST((1, NULL), 'Tuple(`a b` UInt8, c Nullable(String))') AS t",
    "SELECT () AS e, [(), ()] AS es, number AS n FROM numbers(3)",
]


@pytest.mark.parametrize("sql", NEWER_TYPES)
def test_native_shaper_walks_newer_types_exactly(engine: Engine, sql: str) -> None:
    data = engine.execute(f"SELECT * FROM ({sql}) SETTINGS max_block_size = 2",
                          "Native").body.read()
    shaper = native.Shaper(54460)
    out = b"".join(shaper(data[i:i + 7]) for i in range(0, len(data), 7))
    shaper.finish()  # every block walked to its end, none left over
    assert len(out) > len(data)
    assert out.startswith(b"\x01\x00\x02\xff\xff\xff\xff\x00")

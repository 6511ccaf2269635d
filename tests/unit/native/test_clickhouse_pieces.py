"""Pure pieces of the ClickHouse HTTP endpoint: statement parsing and body codecs."""

from __future__ import annotations

import os

import pytest

from etar.native.clickhouse import codecs
from etar.native.clickhouse.engine import EngineError, first_keyword
from etar.native.clickhouse.server import _FORMAT, _INSERT


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

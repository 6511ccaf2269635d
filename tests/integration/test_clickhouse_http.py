"""Conformance of the native stack's ClickHouse HTTP endpoint (chdb behind it).

Driven with clickhouse-connect, as etar's code uses it, and with raw HTTP as in ClickHouse's
HTTP interface documentation. Each run works in a database of its own, dropped at the end.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import quote

import httpx
import lz4.frame
import pandas as pd
import pyarrow as pa
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from pydantic import SecretStr

from etar.config import Settings
from etar.warehouse import table as warehouse
from etar_stack.clickhouse_http import blocks
from tests.integration.lanes import scratch_database

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def database(stack_settings: Settings) -> Iterator[str]:
    with scratch_database(stack_settings, "conformance") as name:
        yield name


@pytest.fixture(params=[False, True], ids=["plain", "compressed"])
def ch(request: pytest.FixtureRequest, stack_settings: Settings, database: str) -> Client:
    return warehouse.client(stack_settings, database=database, compress=request.param,
                            autogenerate_session_id=True)


@pytest.fixture
def url(stack_settings: Settings) -> str:
    return f"http://{stack_settings.clickhouse_host}:{stack_settings.clickhouse_port}/"


@pytest.fixture
def auth(stack_settings: Settings) -> tuple[str, str]:
    return stack_settings.clickhouse_user, stack_settings.clickhouse_password.get_secret_value()


TABLE = """CREATE TABLE {name} (id UInt64, user UUID, kind Enum8('A' = 1, 'B' = 2),
    note Nullable(String), price Decimal(10, 2), ts DateTime64(3, 'UTC'))
    ENGINE = MergeTree PARTITION BY toStartOfMinute(ts) ORDER BY id"""
TS = datetime(2026, 3, 1, 12, 30, 15, 123_000, tzinfo=UTC)


def _table(ch: Client) -> str:
    name = f"t_{uuid.uuid4().hex[:8]}"
    ch.command(TABLE.format(name=name))
    return name


def test_command_query_and_server_metadata(ch: Client) -> None:
    assert ch.command("SELECT 1 + 1") == 2
    assert ch.server_version.count(".") >= 2
    assert ch.command("SELECT timezone()") in ("UTC", "Etc/UTC")
    result = ch.query("SELECT number, toString(number) AS s FROM numbers(5)")
    assert result.column_names == ("number", "s")
    assert result.result_rows == [(n, str(n)) for n in range(5)]


def test_insert_rows_round_trip_every_type(ch: Client) -> None:
    table = _table(ch)
    user = uuid.uuid4()
    ch.insert(table, [[1, user, "A", None, Decimal("9.99"), TS], [2, user, "B", "x", Decimal("0.5"),
                                                                  TS]],
              column_names=["id", "user", "kind", "note", "price", "ts"])
    rows = ch.query(f"SELECT id, user, kind, note, price, ts FROM {table} ORDER BY id").result_rows
    assert rows[0][:5] == (1, user, "A", None, Decimal("9.99"))
    assert rows[1][3] == "x"
    assert rows[0][5].replace(tzinfo=UTC) == TS  # milliseconds survive


def test_insert_df_query_df_and_arrow(ch: Client) -> None:
    table = _table(ch)
    frame = pd.DataFrame({
        "id": [10, 11, 12], "user": [uuid.uuid4() for _ in range(3)], "kind": ["A", "B", "A"],
        "note": ["n", None, "m"], "price": [Decimal("1.00"), Decimal("2.50"), Decimal("3.25")],
        "ts": [pd.Timestamp(TS)] * 3})
    ch.insert_df(table, frame)
    arrow = pa.table({"id": pa.array([13], pa.uint64()), "user": [str(uuid.uuid4())],
                      "kind": ["B"], "note": pa.array([None], pa.string()),
                      "price": pa.array([Decimal("4.00")], pa.decimal128(10, 2)),
                      "ts": pa.array([TS], pa.timestamp("ms", tz="UTC"))})
    ch.insert_arrow(table, arrow)
    back = ch.query_df(f"SELECT id, kind, note FROM {table} ORDER BY id")
    assert back["id"].tolist() == [10, 11, 12, 13]
    assert back["kind"].tolist() == ["A", "B", "A", "B"]
    assert pd.isna(back["note"].iloc[1]) and back["note"].iloc[0] == "n"
    table_back = ch.query_arrow(f"SELECT id, price FROM {table} ORDER BY id")
    assert table_back.num_rows == 4
    assert table_back.column("id").to_pylist() == [10, 11, 12, 13]


def test_server_side_parameter_binding(ch: Client) -> None:
    bound = ch.query("SELECT {a:UInt32} + 1, {s:String}, {t:DateTime64(3, 'UTC')}",
                     parameters={"a": 41, "s": "it's", "t": TS}).result_rows[0]
    assert bound[0] == 42 and bound[1] == "it's"
    assert bound[2].replace(tzinfo=UTC) == TS


def test_errors_carry_clickhouse_codes(ch: Client) -> None:
    with pytest.raises(DatabaseError) as unknown:
        ch.query("SELECT * FROM no_such_table")
    assert unknown.value.code == 60
    with pytest.raises(DatabaseError) as syntax:
        ch.command("SELEC 1")
    assert syntax.value.code == 62
    with pytest.raises(DatabaseError) as setting:
        ch.query("SELECT 1", settings={"no_such_setting": 1})
    assert setting.value.code == 115


def test_wrong_password_gets_authentication_error(stack_settings: Settings) -> None:
    wrong = stack_settings.model_copy(update={"clickhouse_password": SecretStr("nope")})
    with pytest.raises(DatabaseError) as denied:
        warehouse.client(wrong).command("SELECT 1")
    assert denied.value.code == 516


def test_sessions_keep_settings(ch: Client) -> None:
    ch.command("SET max_threads = 1")
    assert ch.command("SELECT getSetting('max_threads')") == 1
    other = warehouse.client(database=ch.database)
    assert other.command("SELECT getSetting('max_threads')") != 1


SLOW = b"SELECT sum(sleepEachRow(0.3)) FROM numbers(6) SETTINGS max_block_size = 1"
"""About 1.8 s in the engine."""


def _in_background(call: Callable[[], httpx.Response]) -> tuple[threading.Thread,
                                                                list[httpx.Response]]:
    out: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: out.append(call()))
    thread.start()
    return thread, out


def test_a_session_serves_one_request_at_a_time(url: str, auth: tuple[str, str]) -> None:
    session = {"session_id": f"excl-{uuid.uuid4().hex}"}
    thread, first = _in_background(
        lambda: httpx.post(url, params=session, content=SLOW, auth=auth, timeout=30))
    time.sleep(0.6)  # the slow statement holds the session
    second = httpx.post(url, params=session, content=b"SELECT 1", auth=auth, timeout=10)
    third = httpx.post(url, params=session, content=b"SELECT 1", auth=auth, timeout=10)
    thread.join(30)
    assert second.status_code == 423 and second.headers["X-ClickHouse-Exception-Code"] == "373"
    # the refused request must not have released the lock the first one holds
    assert third.headers.get("X-ClickHouse-Exception-Code") == "373", third.text
    assert first[0].status_code == 200 and first[0].text == "0\n"
    after = httpx.post(url, params=session, content=b"SELECT 1", auth=auth, timeout=10)
    assert after.text == "1\n"


def test_a_long_extract_does_not_block_inserts(url: str, auth: tuple[str, str],
                                               database: str) -> None:
    table = f"{database}.during_extract"
    httpx.post(url, content=f"CREATE TABLE {table} (a UInt32) ENGINE = MergeTree "
               "ORDER BY a".encode(), auth=auth).raise_for_status()
    thread, extract = _in_background(
        lambda: httpx.post(url, content=SLOW, auth=auth, timeout=30))
    time.sleep(0.6)
    started = time.monotonic()
    inserted = httpx.post(url, params={"query": f"INSERT INTO {table} FORMAT CSV"},
                          content=b"1\n2\n3\n", auth=auth, timeout=30)
    took = time.monotonic() - started
    still_running = thread.is_alive()
    thread.join(30)
    assert inserted.status_code == 200, inserted.text
    assert took < 0.9, f"the insert waited {took:.2f} s behind the extract"
    assert still_running, "the extract ended before the insert: the test saw nothing"
    assert extract[0].status_code == 200


def test_session_temporary_tables_and_use_last(url: str, auth: tuple[str, str],
                                               database: str) -> None:
    session = {"session_id": f"tmp-{uuid.uuid4().hex}"}
    for sql in (f"USE {database}", "CREATE TEMPORARY TABLE scratch (a UInt8)",
                "INSERT INTO scratch VALUES (7)"):
        httpx.post(url, params=session, content=sql.encode(), auth=auth).raise_for_status()
    assert httpx.post(url, params=session, content=b"SELECT a, currentDatabase() FROM scratch",
                      auth=auth).text == f"7\t{database}\n"


def test_set_without_a_session_changes_nothing_for_anyone(url: str,
                                                          auth: tuple[str, str]) -> None:
    assert httpx.post(url, content=b"SET max_threads = 1", auth=auth).status_code == 200
    after = httpx.post(url, content=b"SELECT getSetting('max_threads')", auth=auth)
    assert after.text.strip() != "1"
    bad = httpx.post(url, content=b"SET no_such_setting = 1", auth=auth)
    assert bad.headers["X-ClickHouse-Exception-Code"] == "115"


def test_concurrent_clients_insert_and_read(stack_settings: Settings, database: str) -> None:
    writer = warehouse.client(stack_settings, database=database)
    table = _table(writer)
    errors: list[BaseException] = []

    def insert(start: int) -> None:
        try:
            client = warehouse.client(stack_settings, database=database)
            for batch in range(5):
                rows = [[start + batch * 100 + i, uuid.uuid4(), "A", None, Decimal(1), TS]
                        for i in range(100)]
                client.insert(table, rows, column_names=["id", "user", "kind", "note", "price",
                                                         "ts"])
                client.query(f"SELECT count() FROM {table}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=insert, args=(n * 10_000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert writer.command(f"SELECT count() FROM {table}") == 2_000


# --- raw HTTP, as in ClickHouse's HTTP interface docs ------------------------------------

def test_ping_and_get_query(url: str, auth: tuple[str, str]) -> None:
    assert httpx.get(f"{url}ping").text == "Ok.\n"
    response = httpx.get(url, params={"query": "SELECT 1, 'a'"}, auth=auth)
    assert response.text == "1\ta\n"
    assert response.headers["X-ClickHouse-Format"] == "TabSeparated"
    assert response.headers["X-ClickHouse-Timezone"]
    summary = json.loads(response.headers["X-ClickHouse-Summary"])
    assert summary["result_rows"] == "1"


def test_query_in_body_default_format_and_query_id(url: str, auth: tuple[str, str]) -> None:
    response = httpx.post(url, params={"default_format": "JSONEachRow", "query_id": "q-123"},
                          content=b"SELECT 1 AS x", auth=auth)
    assert response.json() == {"x": 1}
    assert response.headers["X-ClickHouse-Query-Id"] == "q-123"
    assert response.headers["X-ClickHouse-Format"] == "JSONEachRow"


def test_param_binding_and_credentials_headers(url: str, auth: tuple[str, str]) -> None:
    response = httpx.get(url, params={"query": "SELECT {n:UInt8} * 2", "param_n": "21"},
                         headers={"X-ClickHouse-User": auth[0], "X-ClickHouse-Key": auth[1]})
    assert response.text == "42\n"


def test_get_is_read_only(url: str, auth: tuple[str, str], database: str) -> None:
    response = httpx.get(url, params={"query": f"CREATE TABLE {database}.x (a UInt8) "
                                      "ENGINE = Memory"}, auth=auth)
    assert response.headers["X-ClickHouse-Exception-Code"] == "164"


def test_error_response_shape(url: str, auth: tuple[str, str]) -> None:
    response = httpx.post(url, content=b"SELECT * FROM nowhere", auth=auth)
    assert response.status_code == 404
    assert response.headers["X-ClickHouse-Exception-Code"] == "60"
    assert response.text.startswith("Code: 60. DB::Exception:")
    denied = httpx.post(url, content=b"SELECT 1", auth=("default", "wrong"))
    assert denied.headers["X-ClickHouse-Exception-Code"] == "516"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "lz4", "zstd", "br"])
def test_compressed_insert_and_response(url: str, auth: tuple[str, str], database: str,
                                        encoding: str) -> None:
    import zlib

    import brotli
    from backports import zstd

    compress = {"gzip": gzip.compress, "deflate": zlib.compress, "lz4": lz4.frame.compress,
                "zstd": zstd.compress, "br": brotli.compress}[encoding]
    table = f"{database}.c_{encoding}"
    httpx.post(url, content=f"CREATE TABLE {table} (a UInt32, s String) ENGINE = MergeTree "
               "ORDER BY a".encode(), auth=auth).raise_for_status()
    csv = "".join(f"{i},row{i}\n" for i in range(1000)).encode()
    inserted = httpx.post(url, params={"query": f"INSERT INTO {table} FORMAT CSV"},
                          content=compress(csv), headers={"Content-Encoding": encoding},
                          auth=auth)
    assert inserted.status_code == 200, inserted.text
    assert json.loads(inserted.headers["X-ClickHouse-Summary"])["written_rows"] == "1000"
    decompress = {"gzip": gzip.decompress, "deflate": zlib.decompress,
                  "lz4": lz4.frame.decompress, "zstd": zstd.decompress,
                  "br": brotli.decompress}[encoding]
    with httpx.Client(auth=auth) as client:
        request = client.build_request(
            "POST", url, params={"enable_http_compression": "1"},
            content=f"SELECT count(), sum(a) FROM {table}".encode(),
            headers={"Accept-Encoding": encoding})
        response = client.send(request, stream=True)
        raw = b"".join(response.iter_raw())
    assert response.headers["Content-Encoding"] == encoding
    assert decompress(raw) == b"1000\t499500\n"


def test_binary_formats_round_trip(url: str, auth: tuple[str, str], database: str) -> None:
    table = f"{database}.binary_rt"
    httpx.post(url, content=f"CREATE TABLE {table} (a UInt64, s String) ENGINE = MergeTree "
               "ORDER BY a".encode(), auth=auth).raise_for_status()
    for fmt in ("Native", "RowBinary"):
        query = f"SELECT number AS a, toString(number) AS s FROM numbers(500) FORMAT {fmt}"
        data = httpx.post(url, content=query.encode(), auth=auth).content
        httpx.post(url, params={"query": f"INSERT INTO {table} FORMAT {fmt}"}, content=data,
                   auth=auth).raise_for_status()
    total = httpx.post(url, content=f"SELECT count(), sum(a) FROM {table}".encode(), auth=auth)
    assert total.text == "1000\t249500\n"


def test_insert_statement_and_data_in_body(url: str, auth: tuple[str, str], database: str
                                           ) -> None:
    table = f"{database}.body_insert"
    httpx.post(url, content=f"CREATE TABLE {table} (a UInt8) ENGINE = Memory".encode(),
               auth=auth).raise_for_status()
    httpx.post(url, content=f"INSERT INTO {table} FORMAT TSV\n1\n2\n3\n".encode(),
               auth=auth).raise_for_status()
    response = httpx.post(url, params={"database": database},
                          content=b"SELECT sum(a) FROM body_insert", auth=auth)
    assert response.text == "6\n"


# --- what the JDBC and Go drivers rely on ---------------------------------------------------

def test_format_and_database_headers_take_precedence(url: str, auth: tuple[str, str],
                                                     database: str) -> None:
    response = httpx.post(url, params={"default_format": "CSV", "database": "default"},
                          content=b"SELECT 1 AS x, currentDatabase() AS db", auth=auth,
                          headers={"X-ClickHouse-Format": "JSONEachRow",
                                   "X-ClickHouse-Database": database,
                                   "X-ClickHouse-Quota": "anything"})
    assert response.json() == {"x": 1, "db": database}
    assert response.headers["X-ClickHouse-Format"] == "JSONEachRow"
    named = httpx.post(url, content=b"SELECT 1 AS x FORMAT TSVWithNames", auth=auth,
                       headers={"X-ClickHouse-Format": "JSONEachRow"})
    assert named.text == "x\n1\n" and named.headers["X-ClickHouse-Format"] == "TSVWithNames"


def test_display_name_header_matches_display_name(url: str, auth: tuple[str, str]) -> None:
    response = httpx.post(url, content=b"SELECT displayName()", auth=auth)
    assert response.headers["X-ClickHouse-Server-Display-Name"] == response.text.strip()


@pytest.mark.parametrize("method", [blocks.LZ4, blocks.ZSTD, blocks.NONE])
def test_native_block_compression_both_ways(url: str, auth: tuple[str, str], database: str,
                                            method: int) -> None:
    table = f"{database}.blocks_{method}"
    httpx.post(url, content=f"CREATE TABLE {table} (a UInt32, s String) ENGINE = MergeTree "
               "ORDER BY a".encode(), auth=auth).raise_for_status()
    csv = "".join(f"{i},row{i}\n" for i in range(50_000)).encode()
    body = b"".join(blocks.compress_block(csv[i:i + 100_000], method)
                    for i in range(0, len(csv), 100_000))
    inserted = httpx.post(url, params={"query": f"INSERT INTO {table} FORMAT CSV",
                                       "decompress": "1"}, content=body, auth=auth)
    assert inserted.status_code == 200, inserted.text
    name = {blocks.LZ4: "lz4", blocks.ZSTD: "zstd", blocks.NONE: "none"}[method]
    response = httpx.post(url, params={"compress": "1", "network_compression_method": name},
                          content=f"SELECT a, s FROM {table} ORDER BY a".encode(), auth=auth)
    raw = response.content
    assert raw[blocks.CHECKSUM_SIZE] == method
    decoder = blocks.BlockDecoder()
    assert decoder.decompress(raw) == csv.replace(b",", b"\t")
    decoder.finish()


def test_a_wrong_checksum_gets_code_40_and_changes_nothing(url: str, auth: tuple[str, str],
                                                           database: str) -> None:
    table = f"{database}.checksummed"
    httpx.post(url, content=f"CREATE TABLE {table} (a UInt32) ENGINE = MergeTree "
               "ORDER BY a".encode(), auth=auth).raise_for_status()
    good = blocks.compress_block(b"1\n2\n")
    bad = bytearray(blocks.compress_block(b"3\n4\n"))
    bad[0] ^= 0xFF
    response = httpx.post(url, params={"query": f"INSERT INTO {table} FORMAT TSV",
                                       "decompress": "1"}, content=good + bytes(bad), auth=auth)
    assert response.headers["X-ClickHouse-Exception-Code"] == "40"
    assert "CHECKSUM_DOESNT_MATCH" in response.text
    truncated = httpx.post(url, params={"query": f"INSERT INTO {table} FORMAT TSV",
                                        "decompress": "1"}, content=good[:-3], auth=auth)
    assert truncated.status_code != 200
    count = httpx.post(url, content=f"SELECT count() FROM {table}".encode(), auth=auth)
    assert count.text == "0\n"


def test_native_output_shaped_by_client_protocol_version(url: str, auth: tuple[str, str]
                                                         ) -> None:
    sql = b"SELECT number AS n, toString(number) AS s FROM numbers(3)"
    plain = httpx.post(url, params={"default_format": "Native"}, content=sql, auth=auth).content
    shaped = httpx.post(url, params={"default_format": "Native",
                                     "client_protocol_version": "54460"},
                        content=sql, auth=auth).content
    # block info (is_overflows = 0, bucket_num = -1), then the counts as before
    assert shaped[:8] == b"\x01\x00\x02" + struct.pack("<i", -1) + b"\x00"
    assert shaped[8:10] == plain[:2] == b"\x02\x03"
    # after each column's type, one byte: no custom serialization
    n_type = plain.index(b"UInt64") + len(b"UInt64")
    assert shaped[8 + n_type] == 0 and len(shaped) == len(plain) + 8 + 2


def _random_csv(rows: int) -> bytes:
    """CSV that compresses little: its body spans many of the endpoint's received batches."""
    return b"".join(b"%d,%s\n" % (i, os.urandom(24).hex().encode()) for i in range(rows))


def test_a_body_corrupt_midway_inserts_nothing(url: str, auth: tuple[str, str],
                                               database: str) -> None:
    table = f"{database}.corrupt_midway"
    httpx.post(url, content=f"CREATE TABLE {table} (a UInt64, s String) ENGINE = MergeTree "
               "ORDER BY a".encode(), auth=auth).raise_for_status()
    body = gzip.compress(_random_csv(150_000)) + b"\x1f\x8b but no gzip member"
    assert len(body) > 3 * 1024 * 1024  # the engine has taken several batches by then
    response = httpx.post(url, params={"query": f"INSERT INTO {table} FORMAT CSV"},
                          content=body, headers={"Content-Encoding": "gzip"}, auth=auth,
                          timeout=60)
    assert response.headers["X-ClickHouse-Exception-Code"] == "354", response.text
    count = httpx.post(url, content=f"SELECT count() FROM {table}".encode(), auth=auth)
    assert count.text == "0\n"


def test_a_client_leaving_midway_inserts_nothing(stack_settings: Settings, url: str,
                                                 auth: tuple[str, str], database: str) -> None:
    table = f"{database}.left_midway"
    httpx.post(url, content=f"CREATE TABLE {table} (a UInt64, s String) ENGINE = MergeTree "
               "ORDER BY a".encode(), auth=auth).raise_for_status()
    data = _random_csv(100_000)
    sent = data[:data.index(b"\n", len(data) // 2) + 1]  # whole rows, half of the body
    session = f"left-{uuid.uuid4().hex}"
    target = (f"/?session_id={session}&query=" +
              quote(f"INSERT INTO {table} FORMAT CSV"))
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    with socket.create_connection((stack_settings.clickhouse_host,
                                   stack_settings.clickhouse_port), timeout=30) as raw:
        raw.sendall(f"POST {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n".encode() + sent)
        time.sleep(0.5)  # the endpoint takes what came before the client leaves
    deadline = time.monotonic() + 30
    while True:  # the session is locked until the endpoint has dealt with the request
        after = httpx.post(url, params={"session_id": session}, content=b"SELECT 1",
                           auth=auth, timeout=10)
        if after.headers.get("X-ClickHouse-Exception-Code") != "373":
            break
        assert time.monotonic() < deadline, "the request never ended"
        time.sleep(0.2)
    assert after.text == "1\n"
    count = httpx.post(url, content=f"SELECT count() FROM {table}".encode(), auth=auth)
    assert count.text == "0\n"

"""The endpoint's surface as clickhouse-connect's wider API uses it (issue #23).

Each item of a ClickHouse server's HTTP interface the client relies on beyond plain queries:
``X-ClickHouse-Summary`` on every response, time zones (``X-ClickHouse-Timezone``,
``session_timezone``, ``DateTime``'s own zone in Native output), multipart/form-data (external
tables, the query and its parameters as form fields) and errors after the first byte. Every
test runs through the client plain and compressed.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import pytest
from clickhouse_connect import common
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from clickhouse_connect.driver.external import ExternalData
from clickhouse_connect.driver.summary import QuerySummary

from etar.config import Settings
from etar.warehouse import table as warehouse
from tests.integration.lanes import scratch_database

pytestmark = pytest.mark.integration

WALL = datetime(2024, 1, 1, 0, 0)


@pytest.fixture(scope="module")
def database(stack_settings: Settings) -> Iterator[str]:
    with scratch_database(stack_settings, "surface") as name:
        yield name


@pytest.fixture(params=[False, True], ids=["plain", "compressed"])
def ch(request: pytest.FixtureRequest, stack_settings: Settings, database: str) -> Client:
    return warehouse.client(stack_settings, database=database, compress=request.param)


@pytest.fixture(params=[False, True], ids=["plain", "compressed"])
def session_ch(request: pytest.FixtureRequest, stack_settings: Settings,
               database: str) -> Client:
    return warehouse.client(stack_settings, database=database, compress=request.param,
                            autogenerate_session_id=True)


# -- X-ClickHouse-Summary ---------------------------------------------------------------------
def test_every_command_reports_a_summary(ch: Client) -> None:
    name = f"s_{uuid.uuid4().hex[:8]}"
    for command in ("SET max_threads = 2", f"CREATE TABLE {name} (n UInt64) ENGINE = Memory",
                    f"USE {ch.database}"):
        summary = ch.command(command)
        assert isinstance(summary, QuerySummary), command
        assert {"read_rows", "written_rows", "elapsed_ns"} <= summary.summary.keys(), command
    inserted = ch.command(f"INSERT INTO {name} SELECT number FROM numbers(10)")
    assert isinstance(inserted, QuerySummary)
    assert inserted.written_rows == 10
    assert ch.insert(name, [[1], [2]], column_names=["n"]).written_rows == 2
    assert ch.query(f"SELECT n FROM {name}").summary["result_rows"] == "12"


def test_an_error_and_a_set_report_a_summary_over_http(stack_settings: Settings) -> None:
    url = f"http://{stack_settings.clickhouse_host}:{stack_settings.clickhouse_port}/"
    auth = (stack_settings.clickhouse_user,
            stack_settings.clickhouse_password.get_secret_value())
    for sql, status in (("SELECT * FROM no_such_table_here", 404), ("SET max_threads = 1", 200)):
        response = httpx.post(url, content=sql, auth=auth, timeout=30)
        assert response.status_code == status, response.text
        assert json.loads(response.headers["X-ClickHouse-Summary"])["read_rows"] == "0"


# -- time zones -------------------------------------------------------------------------------
ZONED = ("SELECT toDateTime('2024-01-01 00:00:00', 'Asia/Tokyo') AS zoned, "
         "toDateTime('2024-01-01 00:00:00') AS naive, "
         "[toDateTime('2024-01-01 00:00:00', 'Asia/Tokyo')] AS nested, "
         "toDateTime64('2024-01-01 00:00:00', 3, 'Asia/Tokyo') AS zoned64")


def test_a_columns_own_time_zone_reaches_the_client(ch: Client) -> None:
    zoned, naive, nested, zoned64 = ch.query(ZONED).result_rows[0]
    tokyo = WALL.replace(tzinfo=ZoneInfo("Asia/Tokyo"))
    assert zoned == tokyo and zoned.tzinfo == ZoneInfo("Asia/Tokyo")
    assert nested == [tokyo] and nested[0].tzinfo == ZoneInfo("Asia/Tokyo")
    assert zoned64 == tokyo and zoned64.tzinfo == ZoneInfo("Asia/Tokyo")
    assert naive == WALL and naive.tzinfo is None  # the server's UTC: naive, as from a server


def test_session_timezone_is_the_reported_time_zone(ch: Client) -> None:
    zoned, naive, _, _ = ch.query(ZONED, settings={"session_timezone": "America/New_York"}
                                  ).result_rows[0]
    assert naive == WALL.replace(tzinfo=ZoneInfo("America/New_York"))
    assert naive.tzinfo == ZoneInfo("America/New_York")
    assert zoned.tzinfo == ZoneInfo("Asia/Tokyo")  # a column's own zone wins


def test_a_statements_settings_clause_sets_the_reported_time_zone(ch: Client) -> None:
    naive = ch.query("SELECT toDateTime('2024-01-01 00:00:00') AS naive "
                     "SETTINGS session_timezone = 'Asia/Kolkata'").result_rows[0][0]
    assert naive == WALL.replace(tzinfo=ZoneInfo("Asia/Kolkata"))
    assert naive.tzinfo == ZoneInfo("Asia/Kolkata")


def test_a_sessions_set_timezone_lasts(session_ch: Client) -> None:
    session_ch.command("SET session_timezone = 'Europe/Berlin'")
    naive = session_ch.query(ZONED).result_rows[0][1]
    assert naive == WALL.replace(tzinfo=ZoneInfo("Europe/Berlin"))
    session_ch.command("SET session_timezone = ''")
    assert session_ch.query(ZONED).result_rows[0][1].tzinfo is None


# -- multipart/form-data ----------------------------------------------------------------------
def test_external_data_with_a_structure(ch: Client) -> None:
    data = ExternalData(data=b"1\tone\n2\ttwo\n", file_name="ext.tsv",
                        structure="id UInt32, name String")
    rows = ch.query("SELECT id, name FROM ext ORDER BY id", external_data=data).result_rows
    assert rows == [(1, "one"), (2, "two")]


def test_external_tables_with_types_and_a_format_join_a_table(ch: Client) -> None:
    name = f"e_{uuid.uuid4().hex[:8]}"
    ch.command(f"CREATE TABLE {name} (id UInt32, price Float64) ENGINE = Memory")
    ch.insert(name, [[1, 9.5], [2, 3.0], [3, 1.0]], column_names=["id", "price"])
    data = ExternalData(data=b"1,a\n3,c\n", file_name="wanted.csv", fmt="CSV",
                        types="UInt32,String")
    data.add_file(data=b'{"k":7}\n', file_name="more.json", fmt="JSONEachRow",
                  structure="k UInt8")
    rows = ch.query(f"SELECT w._2, t.price, (SELECT k FROM more) FROM {name} AS t "
                    "JOIN wanted AS w ON t.id = w._1 ORDER BY t.id",
                    external_data=data).result_rows
    assert rows == [("a", 9.5, 7), ("c", 1.0, 7)]
    loaded = ch.command(f"INSERT INTO {name} SELECT _1, 0.5 FROM wanted",
                        external_data=ExternalData(data=b"7,x\n8,y\n", file_name="wanted.csv",
                                                   fmt="CSV", types="UInt32,String"))
    assert isinstance(loaded, QuerySummary) and loaded.written_rows == 2
    assert ch.command(f"SELECT count() FROM {name}") == 5


def test_external_data_lasts_for_its_query_only_in_a_session(session_ch: Client) -> None:
    data = ExternalData(data=b"5\n", file_name="once.tsv", types="UInt8")
    assert session_ch.query("SELECT _1 FROM once", external_data=data).result_rows == [(5,)]
    with pytest.raises(DatabaseError, match=r"UNKNOWN_TABLE|doesn't exist|does not exist"):
        session_ch.query("SELECT _1 FROM once")
    assert session_ch.query("SELECT _1 + 1 FROM once", external_data=data
                            ).result_rows == [(6,)]


def test_large_parameters_go_as_form_fields(ch: Client) -> None:
    big = "x" * 300_000  # the client moves the query and its parameters into the body
    assert ch.query("SELECT length({s:String}), {n:UInt8}",
                    parameters={"s": big, "n": 7}).result_rows == [(300_000, 7)]


def test_a_form_encoding_client_sends_everything_as_fields(stack_settings: Settings,
                                                           database: str) -> None:
    for compress in (False, True):
        client = warehouse.client(stack_settings, database=database, compress=compress)
        client.form_encode_query_params = True
        assert client.query("SELECT {a:String} || {b:String}", parameters={
            "a": "form", "b": "-fields"}).result_rows == [("form-fields",)]
        data = ExternalData(data=b"2\n", file_name="f.tsv", types="UInt8")
        assert client.query("SELECT _1 * {m:UInt8} FROM f", parameters={"m": 21},
                            external_data=data).result_rows == [(42,)]


# -- results while they are produced, errors after the first byte ------------------------------
SLOW = ("SELECT number, randomPrintableASCII(2000) AS text, sleepEachRow(0.001) AS z "
        "FROM numbers(4000) SETTINGS max_block_size = 1000")
"""Four blocks of 2 MB, one a second: rows of the first reach the client while the others are
still being made."""


@pytest.fixture
def small_read_ahead() -> Iterator[None]:
    """clickhouse-connect reads 10 MiB ahead before it parses anything; 1 MiB here."""
    before = common.get_setting("http_buffer_size")
    common.set_setting("http_buffer_size", 1024 * 1024)
    yield
    common.set_setting("http_buffer_size", before)


@pytest.mark.usefixtures("small_read_ahead")
def test_a_large_result_streams_while_it_is_produced(ch: Client) -> None:
    started = time.monotonic()
    with ch.query_rows_stream(SLOW) as rows:
        first = next(iter(rows))
        first_at = time.monotonic() - started
        rest = sum(1 for _ in rows)
    total = time.monotonic() - started
    assert first[0] == 0 and rest == 3999
    assert total >= 3.5
    assert first_at < total - 1.5, (first_at, total)  # rows came long before the end


def test_wait_end_of_query_keeps_the_whole_result_and_its_summary(ch: Client) -> None:
    big = "SELECT number, randomPrintableASCII(500) FROM numbers(20000)"  # 10 MB: streamed
    whole = ch.query(big, settings={"wait_end_of_query": 1})
    assert len(whole.result_rows) == 20000
    assert whole.summary["read_rows"] == "20000" and whole.summary["result_rows"] == "20000"
    streamed = ch.query(big)
    assert len(streamed.result_rows) == 20000
    assert int(streamed.summary["read_rows"]) <= 20000  # its progress when it started


def test_an_error_after_the_first_byte_reaches_the_client(ch: Client) -> None:
    late = ("SELECT number, sleepEachRow(0.1), throwIf(number = 20) FROM numbers(30) "
            "SETTINGS max_block_size = 1")
    seen: list[int] = []
    with (pytest.raises(DatabaseError, match="FUNCTION_THROW_IF_VALUE_IS_NON_ZERO") as caught,
          ch.query_rows_stream(late) as rows):
        seen.extend(row[0] for row in rows)
    assert "395" in str(caught.value)
    assert seen[:10] == list(range(10))  # rows before the error arrived first
    with pytest.raises(DatabaseError, match="FUNCTION_THROW_IF_VALUE_IS_NON_ZERO"):
        ch.query(late)
    assert ch.command("SELECT 1") == 1  # the client goes on


def test_the_exception_block_is_a_servers(stack_settings: Settings) -> None:
    url = f"http://{stack_settings.clickhouse_host}:{stack_settings.clickhouse_port}/"
    auth = (stack_settings.clickhouse_user,
            stack_settings.clickhouse_password.get_secret_value())
    late = ("SELECT number, sleepEachRow(0.1), throwIf(number = 15) FROM numbers(30) "
            "SETTINGS max_block_size = 1")
    response = httpx.post(url, content=late, auth=auth, timeout=30)
    assert response.status_code == 200  # the status went out with the first rows
    tag = response.headers["X-ClickHouse-Exception-Tag"]
    rows, _, block = response.content.partition(b"\r\n__exception__\r\n")
    assert rows.splitlines()[:2] == [b"0\t0\t0", b"1\t0\t0"]
    head, _, tail = block.partition(b"\r\n")
    assert head == tag.encode()
    block_end = re.fullmatch(rb"(Code: 395\. DB::Exception: .*)\n(\d+) " + tag.encode()
                             + rb"\r\n__exception__\r\n", tail, re.S)
    assert block_end, tail[-300:]
    assert int(block_end.group(2)) == len(block_end.group(1)) + 1  # the message's length
    early = httpx.post(url, content="SELECT throwIf(number = 3) FROM numbers(10)", auth=auth,
                       timeout=30)
    assert early.status_code == 500  # an error before any output keeps its status
    assert early.headers["X-ClickHouse-Exception-Code"] == "395"


def test_a_client_leaving_stops_its_statement_and_frees_its_session(
        stack_settings: Settings) -> None:
    url = f"http://{stack_settings.clickhouse_host}:{stack_settings.clickhouse_port}/"
    auth = (stack_settings.clickhouse_user,
            stack_settings.clickhouse_password.get_secret_value())
    session = {"session_id": f"leaving-{uuid.uuid4().hex[:8]}"}
    endless = SLOW.replace("numbers(4000)", "numbers(30000)")  # 30 s if left to run
    with httpx.stream("POST", url, params=session, content=endless, auth=auth,
                      timeout=30) as response:
        assert response.status_code == 200
        next(response.iter_bytes())
    left = time.monotonic()
    while True:  # the session is locked while its statement runs, then free again
        again = httpx.post(url, params=session, content="SELECT 1", auth=auth, timeout=30)
        if again.status_code == 200:
            break
        assert again.headers["X-ClickHouse-Exception-Code"] == "373", again.text
        assert time.monotonic() - left < 10, "the statement ran on after its client left"
        time.sleep(0.2)
    assert again.text == "1\n"


# -- Native output of newer types -------------------------------------------------------------
def test_newer_types_come_back_as_a_server_sends_them(ch: Client) -> None:
    row = ch.query(
        "SELECT (1.5, 2.5)::Point AS point, [(1.0, 2.0), (3.0, 4.0)]::Ring AS ring, "
        "[[[(1.0, 2.0), (3.0, 4.0)]]]::MultiPolygon AS multi, "
        "'{\"a\": 1, \"b\": {\"c\": \"x\"}}'::JSON AS doc, "
        "'{\"k\": 7, \"s\": [1, 2]}'::JSON(k UInt8) AS typed, "
        "[1.0, 2.0, 3.0]::QBit(Float32, 3) AS vector, "
        "CAST((1, NULL), 'Tuple(`a b` UInt8, c Nullable(String))') AS named, "
        "() AS empty").result_rows[0]
    point, ring, multi, doc, typed, vector, named, empty = row
    assert empty == ()
    assert point == (1.5, 2.5)
    assert ring == [(1.0, 2.0), (3.0, 4.0)]
    assert multi == [[[(1.0, 2.0), (3.0, 4.0)]]]
    assert doc == {"a": 1, "b": {"c": "x"}}
    assert typed == {"k": 7, "s": [1, 2]}
    assert vector == [1.0, 2.0, 3.0]
    assert named == {"a b": 1, "c": None}


def test_variant_dynamic_and_json_columns_over_many_blocks(ch: Client) -> None:
    name = f"v_{uuid.uuid4().hex[:8]}"
    ch.command(f"CREATE TABLE {name} (n UInt32, v Variant(UInt64, String, Array(UInt8)), "
               "d Dynamic, j JSON, o Nullable(String)) ENGINE = MergeTree ORDER BY n")
    ch.command(f"INSERT INTO {name} SELECT number, multiIf(number % 3 = 0, number::Variant("
               "UInt64, String, Array(UInt8)), number % 3 = 1, toString(number), NULL), "
               "if(number % 2 = 0, number::Dynamic, concat('s', toString(number))::Dynamic), "
               "toJSONString(map('k', number))::JSON, if(number % 5 = 0, NULL, 'x') "
               "FROM numbers(1000)")
    rows = ch.query(f"SELECT n, v, d, j, o FROM {name} ORDER BY n",
                    settings={"max_block_size": 100}).result_rows
    assert len(rows) == 1000
    for n, v, d, j, o in rows:
        assert v == (n if n % 3 == 0 else str(n) if n % 3 == 1 else None)
        assert d == (n if n % 2 == 0 else f"s{n}")
        assert j == {"k": n}
        assert o == (None if n % 5 == 0 else "x")

"""The ClickHouse side of etar: the client, the table, partitions and the minute read.

Everything goes through clickhouse-connect on ClickHouse's HTTP interface, so the same code
runs against the native stack's chdb endpoint and a real ClickHouse server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from functools import lru_cache
from typing import Any, BinaryIO

import clickhouse_connect
import pandas as pd
from clickhouse_connect.driver.client import Client

from etar import resources
from etar.config import Settings, get_settings
from etar.errors import ServiceUnavailable
from etar.events.event import schema_field_names
from etar.minute import Minute

COLUMNS = schema_field_names()
"""Columns written by the sink, in insert order: the Avro event's fields (event_minute and
ingested_at are derived by the table)."""

_READ_SETTINGS = {"do_not_merge_across_partitions_select_final": 1}
DEDUPLICATION_WINDOW = 10_000
"""Recent insert blocks the table remembers, so the sink's replayed blocks are dropped."""


def client(settings: Settings | None = None, database: str | None = None,
           **options: Any) -> Client:
    """The process's clickhouse-connect client for the configured endpoint (one per options).

    Without a session id (unless ``autogenerate_session_id=True``), so threads may share it.
    """
    settings = settings or get_settings()
    try:
        return _client(settings.clickhouse_host, settings.clickhouse_port,
                       settings.clickhouse_user, settings.clickhouse_password.get_secret_value(),
                       database or settings.clickhouse_database, tuple(sorted(options.items())))
    except clickhouse_connect.driver.exceptions.OperationalError as exc:
        raise ServiceUnavailable(
            f"ClickHouse at {settings.clickhouse_host}:{settings.clickhouse_port} is unreachable "
            f"({exc}); start the native stack with `etar stack up --detach`") from exc


@lru_cache(maxsize=16)
def _client(host: str, port: int, user: str, password: str, database: str,
            options: tuple[tuple[str, Any], ...]) -> Client:
    return clickhouse_connect.get_client(host=host, port=port, username=user, password=password,
                                         database=database,
                                         **{"autogenerate_session_id": False, **dict(options)})


def table_ddl(settings: Settings | None = None) -> str:
    """``clickhouse_table_schema.sql`` for the configured table name and retention."""
    settings = settings or get_settings()
    sql = resources.text(resources.TABLE_SQL)
    sql = "\n".join(line for line in sql.splitlines() if not line.startswith("--"))
    sql = sql.replace("CREATE TABLE IF NOT EXISTS user_interactions",
                      f"CREATE TABLE IF NOT EXISTS `{settings.clickhouse_table}`")
    return sql.replace(f"toIntervalHour({resources.table_retention_hours()})",
                       f"toIntervalHour({settings.clickhouse_retention_hours})").strip()


def apply_schema(ch: Client | None = None, settings: Settings | None = None) -> None:
    """Create the table if missing; bring its retention TTL and dedup window up to date."""
    settings = settings or get_settings()
    ch = ch or client(settings)
    ch.command(table_ddl(settings))
    engine_full = ch.command(
        "SELECT engine_full FROM system.tables WHERE database = currentDatabase() "
        "AND name = {table:String}", parameters={"table": settings.clickhouse_table})
    wanted = f"toIntervalHour({settings.clickhouse_retention_hours})"
    if wanted not in str(engine_full):
        ch.command(f"ALTER TABLE `{settings.clickhouse_table}` MODIFY TTL event_minute + "
                   f"{wanted} DELETE", settings={"materialize_ttl_after_modify": 0})
    window = f"non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}"
    if window not in str(engine_full):
        ch.command(f"ALTER TABLE `{settings.clickhouse_table}` MODIFY SETTING {window}")


def partitions(ch: Client | None = None, settings: Settings | None = None) -> pd.DataFrame:
    """Rows and active parts per ``event_minute`` partition, oldest first."""
    settings = settings or get_settings()
    ch = ch or client(settings)
    return ch.query_df(
        "SELECT toDateTime(partition, 'UTC') AS event_minute, sum(rows) AS rows, "
        "count() AS parts FROM system.parts WHERE active AND database = currentDatabase() "
        "AND table = {table:String} GROUP BY partition ORDER BY event_minute",
        parameters={"table": settings.clickhouse_table})


_MINUTE_FILTER = "event_minute = {minute:DateTime('UTC')}"


_UUIDS = ("event_id", "user_id", "session_id")


def minute_query(settings: Settings | None = None, uuid_as_text: bool = False) -> str:
    """The per-minute read: one partition, duplicates collapsed (FINAL), bound parameter.

    ``uuid_as_text`` reads UUID columns as their text form, which spares the client one
    Python ``UUID`` object per value (about 3x faster for a large minute).
    """
    settings = settings or get_settings()
    columns = [f"toString({c}) AS {c}" if uuid_as_text and c in _UUIDS else c for c in COLUMNS]
    return (f"SELECT {', '.join(columns)} FROM `{settings.clickhouse_table}` FINAL "
            f"WHERE {_MINUTE_FILTER}")


_AS_TEXT = (*_UUIDS, "event_type", "status", "device")
"""Columns ClickHouse writes as text in the minute's Parquet (Spark has no UUID or enum)."""


@contextmanager
def minute_parquet(minute: Minute, ch: Client | None = None,
                   settings: Settings | None = None) -> Iterator[BinaryIO]:
    """The minute as zstd Parquet, written by ClickHouse and streamed (never held in Python).

    Its schema is :data:`etar.extract.parquet.ARROW_SCHEMA`: UUIDs and enums as text, nullable
    columns nullable, ``event_ts`` as UTC milliseconds.
    """
    settings = settings or get_settings()
    ch = ch or client(settings)
    columns = [f"toString({c}) AS {c}" if c in _AS_TEXT else c for c in COLUMNS]
    query = (f"SELECT {', '.join(columns)} FROM `{settings.clickhouse_table}` FINAL "
             f"WHERE {_MINUTE_FILTER}")
    with ch.raw_stream(query, parameters={"minute": minute.sql_param}, fmt="Parquet",
                       settings={**_READ_SETTINGS,
                                 "output_format_parquet_compression_method": "zstd"}) as stream:
        yield stream  # type: ignore[misc]  # urllib3 response: a binary stream


def read_minute(minute: Minute, ch: Client | None = None,
                settings: Settings | None = None, uuid_as_text: bool = False) -> pd.DataFrame:
    """Every event of one UTC minute as a DataFrame."""
    settings = settings or get_settings()
    ch = ch or client(settings)
    return ch.query_df(minute_query(settings, uuid_as_text),
                       parameters={"minute": minute.sql_param}, settings=_READ_SETTINGS)


def count_minute(minute: Minute, ch: Client | None = None,
                 settings: Settings | None = None) -> int:
    """Distinct events stored for one minute."""
    settings = settings or get_settings()
    ch = ch or client(settings)
    return int(str(ch.command(
        f"SELECT count() FROM `{settings.clickhouse_table}` FINAL WHERE {_MINUTE_FILTER}",
        parameters={"minute": minute.sql_param}, settings=_READ_SETTINGS)))


def minute_plan(minute: Minute, ch: Client | None = None,
                settings: Settings | None = None) -> dict[str, int]:
    """How the minute read prunes (``EXPLAIN indexes = 1``) and how many rows it reads.

    Returns the parts the partition min-max index keeps vs. all active parts, the rows the
    read took from storage (``read_rows`` of the query summary) and the rows it returned.
    """
    settings = settings or get_settings()
    ch = ch or client(settings)
    bound = {"minute": minute.sql_param}
    plan = "\n".join(row[0] for row in ch.query(
        f"EXPLAIN indexes = 1 {minute_query(settings)}", parameters=bound,
        settings=_READ_SETTINGS).result_rows)
    match = re.search(r"Min-Max.*?Parts: (\d+)/(\d+)", plan, re.S)
    if not match:
        raise ValueError(f"the partition index was not used:\n{plan}")
    result = ch.query(minute_query(settings), parameters=bound,  # the whole read's summary
                      settings={**_READ_SETTINGS, "wait_end_of_query": 1})
    return {"parts_selected": int(match.group(1)), "parts_total": int(match.group(2)),
            "read_rows": int(result.summary["read_rows"]),
            "result_rows": len(result.result_rows)}


def count_minutes(minutes: list[Minute], ch: Client | None = None,
                  settings: Settings | None = None) -> dict[Minute, int]:
    """Distinct events stored per minute, for several minutes in one query."""
    settings = settings or get_settings()
    ch = ch or client(settings)
    rows = ch.query(
        f"SELECT event_minute, count() FROM `{settings.clickhouse_table}` FINAL "
        "WHERE event_minute IN {minutes:Array(DateTime('UTC'))} GROUP BY event_minute",
        parameters={"minutes": [m.sql_param for m in minutes]},
        settings=_READ_SETTINGS).result_rows
    return {Minute.containing(start.replace(tzinfo=UTC) if start.tzinfo is None else start):
            int(count) for start, count in rows}

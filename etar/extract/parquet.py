"""Extract one minute: ClickHouse → Parquet → the bucket.

ClickHouse reads the minute's one partition (bound parameter, ``FINAL``) and writes it as
zstd Parquet itself; the bytes stream through to ``YYYY-MM-DD_HH-MM.parquet`` without being
decoded or held in Python, and no S3 credential ever reaches ClickHouse (or its query log).
The Parquet schema is :data:`ARROW_SCHEMA`, derived from the Avro event (UUIDs and enums as
text, since Parquet readers such as Spark have neither type). Re-running a minute overwrites
its object; a minute without rows writes nothing (and removes a stale object) and returns
None. :func:`to_arrow` gives the same table from a pandas DataFrame, for notebooks.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import pyarrow as pa

from etar.config import Settings, get_settings
from etar.events.event import schema_fields
from etar.extract import storage
from etar.minute import Minute
from etar.warehouse import table as warehouse

log = logging.getLogger(__name__)

_AVRO_TO_ARROW: dict[str, pa.DataType] = {
    "uuid": pa.string(),  # Parquet readers such as Spark have no UUID type: text form
    "enum": pa.string(),
    "string": pa.string(),
    "double": pa.float64(),
    "int": pa.int32(),
    "long": pa.int64(),
    "timestamp-millis": pa.timestamp("ms", tz="UTC"),
}


def _arrow_field(avro: dict[str, Any]) -> pa.Field:
    kind = avro["type"]
    nullable = isinstance(kind, list)
    if nullable:
        kind = next(member for member in kind if member != "null")
    if isinstance(kind, dict):
        kind = kind.get("logicalType", kind["type"])
    return pa.field(avro["name"], _AVRO_TO_ARROW[kind], nullable=nullable)


ARROW_SCHEMA = pa.schema([_arrow_field(field) for field in schema_fields()])
"""The Parquet schema of an extracted minute, derived from the Avro event (same order)."""


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    """The minute's DataFrame as an Arrow table of exactly :data:`ARROW_SCHEMA`."""
    columns = {}
    for field in ARROW_SCHEMA:
        values = frame[field.name]
        if field.name in ("event_id", "user_id", "session_id"):
            values = values.astype(str)
        elif field.name == "event_ts":
            values = pd.to_datetime(values, utc=True)
        elif pa.types.is_string(field.type):
            values = values.astype(object).where(values.notna(), None)
        columns[field.name] = pa.array(values, type=field.type, from_pandas=True)
    return pa.table(columns, schema=ARROW_SCHEMA)


def extract_minute(minute: Minute, settings: Settings | None = None) -> str | None:
    """Write the minute's events as Parquet to the bucket; the object name, or None if empty."""
    settings = settings or get_settings()
    name = minute.parquet_name
    rows = warehouse.count_minute(minute, settings=settings)
    if rows == 0:
        if storage.exists(name, settings):
            storage.remove(name, settings)
        log.info("minute %s has no events; nothing extracted", minute)
        return None
    with warehouse.minute_parquet(minute, settings=settings) as parquet:
        storage.upload(name, parquet, "application/vnd.apache.parquet", settings=settings)
    log.info("extracted %d events of %s to s3://%s/%s", rows, minute, settings.s3_bucket, name)
    return name

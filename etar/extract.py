"""Extract one minute: ClickHouse → pandas → Arrow → Parquet → the bucket.

The minute is read with a bound parameter from its one partition (``warehouse.read_minute``),
typed by an explicit Arrow schema that mirrors the Avro event and the ClickHouse table
(UUIDs as their text form, since Parquet readers such as Spark have no UUID type), and
streamed to ``YYYY-MM-DD_HH-MM.parquet``. Re-running a minute overwrites its object; a
minute without rows writes nothing (and removes a stale object) and returns None.
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from etar import storage, warehouse
from etar.config import Settings, get_settings
from etar.events import schema_fields
from etar.minute import Minute

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
    frame = warehouse.read_minute(minute, settings=settings, uuid_as_text=True)
    if frame.empty:
        if storage.exists(name, settings):
            storage.remove(name, settings)
        log.info("minute %s has no events; nothing extracted", minute)
        return None
    table = to_arrow(frame)
    with tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024) as buffer:
        pq.write_table(table, buffer, compression="zstd")
        size = buffer.tell()
        buffer.seek(0)
        storage.upload(name, buffer, "application/vnd.apache.parquet", size,  # type: ignore[arg-type]
                       settings=settings)
    log.info("extracted %d events of %s to s3://%s/%s (%d bytes)", table.num_rows,
             minute, settings.s3_bucket, name, size)
    return name

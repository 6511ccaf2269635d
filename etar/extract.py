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
from datetime import datetime

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from etar import storage, warehouse
from etar.config import Settings, get_settings

log = logging.getLogger(__name__)

ARROW_SCHEMA = pa.schema([
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("user_id", pa.string(), nullable=False),
    pa.field("session_id", pa.string(), nullable=False),
    pa.field("event_type", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("error_code", pa.string()),
    pa.field("error_message", pa.string()),
    pa.field("product_id", pa.string()),
    pa.field("price", pa.float64()),
    pa.field("quantity", pa.int32()),
    pa.field("currency", pa.string()),
    pa.field("search_query", pa.string()),
    pa.field("device", pa.string(), nullable=False),
    pa.field("country", pa.string(), nullable=False),
    pa.field("page_url", pa.string(), nullable=False),
    pa.field("referrer", pa.string()),
    pa.field("event_ts", pa.timestamp("ms", tz="UTC"), nullable=False),
])
"""The Parquet schema of an extracted minute (column order = ``warehouse.COLUMNS``)."""


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


def extract_minute(minute: datetime | str, settings: Settings | None = None) -> str | None:
    """Write the minute's events as Parquet to the bucket; the object name, or None if empty."""
    settings = settings or get_settings()
    start = warehouse.to_minute(minute)
    name = storage.object_name(start, "parquet")
    frame = warehouse.read_minute(start, settings=settings, uuid_as_text=True)
    if frame.empty:
        if storage.exists(name, settings):
            storage.remove(name, settings)
        log.info("minute %s has no events; nothing extracted", start.isoformat())
        return None
    table = to_arrow(frame)
    with tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024) as buffer:
        pq.write_table(table, buffer, compression="zstd")
        size = buffer.tell()
        buffer.seek(0)
        storage.upload(name, buffer, "application/vnd.apache.parquet", size,  # type: ignore[arg-type]
                       settings=settings)
    log.info("extracted %d events of %s to s3://%s/%s (%d bytes)", table.num_rows,
             start.isoformat(), settings.s3_bucket, name, size)
    return name

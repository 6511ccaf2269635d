"""Files etar reads at run time, shipped inside the package (so a wheel install works).

- ``user_event_schema.avsc``: the Avro event (registered by the producer, read by the sink).
- ``clickhouse_table_schema.sql``: the ``user_interactions`` table (also mounted by compose).
- ``spark-log4j2.properties``: the Spark job's quiet log configuration.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

EVENT_SCHEMA = "user_event_schema.avsc"
TABLE_SQL = "clickhouse_table_schema.sql"
SPARK_LOG4J2 = "spark-log4j2.properties"


def text(name: str) -> str:
    """The text of one resource file."""
    return files(__package__).joinpath(name).read_text(encoding="utf-8")


def path(name: str) -> Path:
    """A resource as a file path, for programs outside Python (the JVM) that open it."""
    resource = files(__package__).joinpath(name)
    if not isinstance(resource, Path):  # a zipped install has no file to hand over
        raise FileNotFoundError(f"{name} is not on disk ({resource}); install etar unzipped")
    return resource


def table_retention_hours() -> int:
    """The retention written in ``clickhouse_table_schema.sql`` (the one place it is set)."""
    match = re.search(r"TTL event_minute \+ toIntervalHour\((\d+)\)", text(TABLE_SQL))
    if match is None:
        raise ValueError(f"{TABLE_SQL} has no `TTL event_minute + toIntervalHour(N)` clause")
    return int(match.group(1))

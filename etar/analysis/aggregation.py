"""The minute report: aggregation of a minute's events, on Spark DataFrames.

``aggregate`` is what ``spark/spark.py`` runs and what notebooks call in an interactive
SparkSession; it returns the report body (the job adds ``source`` and ``generated_at``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from etar.events.event import EventType, Status
from etar.minute import Minute

NO_CODE = "(none)"
"""The key of errors that carry no ``error_code`` in ``by_error_code``."""
BY_CODE, WHOLE = 0b100, 0b111
"""``grouping_id`` of a (status, error code) row and of the whole minute's row (bits: event_type,
status, error_code; a set bit is a column grouped away)."""


def finish(report: dict[str, Any], source: str) -> dict[str, Any]:
    """The report as it is stored: the aggregation plus where it came from and when."""
    return {**report, "source": source,
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds")}


def aggregate(events: DataFrame, minute: Minute) -> dict[str, Any]:
    """Totals, errors, success/error counts per event type (every type, zeros included) and
    errors per ``error_code`` (codes seen in the minute only).

    One Spark action, so one scan of the minute: grouping sets give the (type, status) counts,
    the error codes' counts and, in the same pass, the minute's distinct users and revenue
    (``grouping_id`` 1: a (type, status) row, 4: a (status, code) row, 7: the whole minute).
    """
    revenue = F.when((F.col("event_type") == EventType.PURCHASE.value)
                     & (F.col("status") == Status.SUCCESS.value),
                     F.col("price") * F.coalesce(F.col("quantity"), F.lit(1)))
    rows = (events.groupingSets([["event_type", "status"], ["status", "error_code"], []],
                                "event_type", "status", "error_code")
            .agg(F.grouping_id().alias("level"), F.count(F.lit(1)).alias("count"),
                 F.countDistinct("user_id").alias("unique_users"), F.sum(revenue).alias("revenue"))
            .collect())
    by_type = {t.value: {"success": 0, "error": 0} for t in EventType}
    by_code: dict[str, int] = {}
    whole = None
    for row in rows:
        if row["level"] == BY_CODE:
            if row["status"] == Status.ERROR.value:
                code = row["error_code"] or NO_CODE
                by_code[code] = by_code.get(code, 0) + row["count"]
            continue
        if row["level"] == WHOLE:
            whole = row
            continue
        key = "error" if row["status"] == Status.ERROR.value else "success"
        by_type.setdefault(row["event_type"], {"success": 0, "error": 0})[key] += row["count"]
    total = sum(v["success"] + v["error"] for v in by_type.values())
    errors = sum(v["error"] for v in by_type.values())
    return {
        "minute": minute.start.strftime("%Y-%m-%dT%H:%M:00Z"),
        "total_events": total,
        "total_errors": errors,
        "error_rate": round(errors / total, 6) if total else 0.0,
        "unique_users": int(whole["unique_users"] or 0) if whole else 0,
        "revenue": round(float(whole["revenue"] or 0.0), 2) if whole else 0.0,
        "by_event_type": by_type,
        "by_error_code": dict(sorted(by_code.items(), key=lambda kv: (-kv[1], kv[0]))),
    }

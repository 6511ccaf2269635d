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


def finish(report: dict[str, Any], source: str) -> dict[str, Any]:
    """The report as it is stored: the aggregation plus where it came from and when."""
    return {**report, "source": source,
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds")}


def aggregate(events: DataFrame, minute: Minute) -> dict[str, Any]:
    """Totals, errors and success/error counts per event type (every type, zeros included).

    One Spark action, so one scan of the minute: grouping sets give the (type, status) counts
    and, in the same pass, the minute's distinct users and revenue (``grouping_id`` 3 is the
    whole-minute row).
    """
    revenue = F.when((F.col("event_type") == EventType.PURCHASE.value)
                     & (F.col("status") == Status.SUCCESS.value),
                     F.col("price") * F.coalesce(F.col("quantity"), F.lit(1)))
    rows = (events.groupingSets([["event_type", "status"], []], "event_type", "status")
            .agg(F.grouping_id().alias("level"), F.count(F.lit(1)).alias("count"),
                 F.countDistinct("user_id").alias("unique_users"), F.sum(revenue).alias("revenue"))
            .collect())
    by_type = {t.value: {"success": 0, "error": 0} for t in EventType}
    whole = None
    for row in rows:
        if row["level"] != 0:
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
    }

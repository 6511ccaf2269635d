"""The minute report: aggregation of a minute's events, on Spark DataFrames.

``aggregate`` is what ``spark/spark.py`` runs and what notebooks call in an interactive
SparkSession; it returns the report body (the job adds ``source`` and ``generated_at``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from etar.events import EventType, Status
from etar.minute import Minute


def finish(report: dict[str, Any], source: str) -> dict[str, Any]:
    """The report as it is stored: the aggregation plus where it came from and when."""
    return {**report, "source": source,
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds")}


def aggregate(events: DataFrame, minute: Minute) -> dict[str, Any]:
    """Totals, errors and success/error counts per event type (every type, zeros included)."""
    counts = events.groupBy("event_type", "status").count().collect()
    by_type = {t.value: {"success": 0, "error": 0} for t in EventType}
    for row in counts:
        key = "error" if row["status"] == Status.ERROR.value else "success"
        by_type.setdefault(row["event_type"], {"success": 0, "error": 0})[key] += row["count"]
    extra = events.agg(
        F.countDistinct("user_id").alias("unique_users"),
        F.sum(F.when((F.col("event_type") == EventType.PURCHASE.value)
                     & (F.col("status") == Status.SUCCESS.value),
                     F.col("price") * F.coalesce(F.col("quantity"), F.lit(1)))).alias("revenue"),
    ).first()
    total = sum(v["success"] + v["error"] for v in by_type.values())
    errors = sum(v["error"] for v in by_type.values())
    return {
        "minute": minute.start.strftime("%Y-%m-%dT%H:%M:00Z"),
        "total_events": total,
        "total_errors": errors,
        "error_rate": round(errors / total, 6) if total else 0.0,
        "unique_users": int(extra["unique_users"] or 0) if extra else 0,
        "revenue": round(float(extra["revenue"] or 0.0), 2) if extra else 0.0,
        "by_event_type": by_type,
    }

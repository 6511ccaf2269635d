"""Late events: rows that reached ClickHouse after their minute's report was made.

A report counts what was in ClickHouse when its minute ran. An event that arrives later (a
producer stamping old minutes, a sink that was down past the sensor's timeout) lands in its
minute's partition but in no report. :func:`late_minutes` compares each recently reported
minute's report (the JSON in the bucket) with ClickHouse now; re-running such a minute
(clear it in Airflow, or ``etar run-minute``) counts them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from etar import storage, warehouse
from etar.config import Settings, get_settings
from etar.errors import ConfigError
from etar.minute import Minute
from etar.report import read_report

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LateMinute:
    """A reported minute that has more events now than its report counted."""

    minute: Minute
    reported: int
    stored: int

    @property
    def late_events(self) -> int:
        return self.stored - self.reported


def _reported_minutes(since: datetime, settings: Settings) -> list[Minute]:
    minutes = []
    for item in storage.client(settings).list_objects(settings.s3_bucket):
        name = item.object_name or ""
        if name.endswith(".json"):
            try:
                minute = Minute.from_object_name(name)
            except ConfigError:
                continue  # not a minute's report
            if minute.start >= since:
                minutes.append(minute)
    return sorted(minutes)


def late_minutes(lookback_minutes: int = 60, settings: Settings | None = None,
                 now: datetime | None = None) -> list[LateMinute]:
    """Minutes reported in the last ``lookback_minutes`` whose events grew since the report."""
    settings = settings or get_settings()
    since = (now or datetime.now(UTC)) - timedelta(minutes=lookback_minutes)
    minutes = _reported_minutes(since, settings)
    if not minutes:
        return []
    stored = warehouse.count_minutes(minutes, settings=settings)
    late = []
    for minute in minutes:
        reported = int(read_report(minute, settings)["total_events"])
        if stored.get(minute, 0) > reported:
            late.append(LateMinute(minute, reported, stored[minute]))
    return late


def redo_late_minutes(lookback_minutes: int = 60, settings: Settings | None = None,
                      limit: int = 5) -> list[LateMinute]:
    """Re-run (extract → analyze → report) the late minutes, oldest first, at most ``limit``
    per call (the next call takes the rest); the minutes as they were found."""
    from etar.pipeline import run_minute

    settings = settings or get_settings()
    found = late_minutes(lookback_minutes, settings)[:limit]
    for late in found:
        log.info("minute %s: %d events arrived after its report; re-running it", late.minute,
                 late.late_events)
        run_minute(late.minute, settings)
    return found

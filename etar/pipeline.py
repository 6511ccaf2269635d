"""One minute through every batch stage, synchronously: extract → analyze → report.

What the Airflow DAG does per run, without Airflow (``etar run-minute``). Each stage is
idempotent for its minute; an empty minute stops after extract.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from etar import warehouse
from etar.analyze import analyze_minute
from etar.config import Settings, get_settings
from etar.extract import extract_minute
from etar.report import report_minute

log = logging.getLogger(__name__)


@dataclass
class MinuteRun:
    """What happened to one minute."""

    minute: datetime
    parquet: str | None
    report: str | None = None
    posted: dict[str, Any] | None = None

    @property
    def skipped(self) -> bool:
        return self.parquet is None


def run_minute(minute: datetime | str, settings: Settings | None = None) -> MinuteRun:
    settings = settings or get_settings()
    start = warehouse.to_minute(minute)
    run = MinuteRun(start, extract_minute(start, settings))
    if run.skipped:
        log.info("minute %s is empty: analyze and report skipped", start.isoformat())
        return run
    run.report = analyze_minute(start, settings).report
    run.posted = report_minute(start, settings)
    return run

"""One minute through every batch stage, synchronously: extract → analyze → report.

What the Airflow DAG does per run, without Airflow (``etar run-minute``). Each stage is
idempotent for its minute; an empty minute stops after extract.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from etar.analysis.mode import analyze_minute
from etar.config import Settings, get_settings
from etar.extract.parquet import extract_minute
from etar.minute import Minute
from etar.report.minute_report import report_minute

log = logging.getLogger(__name__)


@dataclass
class MinuteRun:
    """What happened to one minute."""

    minute: Minute
    parquet: str | None
    report: str | None = None
    posted: dict[str, Any] | None = None

    @property
    def skipped(self) -> bool:
        return self.parquet is None


def run_minute(minute: Minute, settings: Settings | None = None) -> MinuteRun:
    """Extract, analyze and report one closed minute."""
    settings = settings or get_settings()
    run = MinuteRun(minute, extract_minute(minute, settings))
    if run.skipped:
        log.info("minute %s is empty: analyze and report skipped", minute)
        return run
    run.report = analyze_minute(minute, settings).report
    run.posted = report_minute(minute, settings)
    return run

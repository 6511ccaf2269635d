"""One minute through every batch stage, synchronously: extract → analyze → report.

What the Airflow DAG does per run, without Airflow (``etar run-minute``). Each stage is
idempotent for its minute; an empty minute stops after extract.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from etar.analysis.submit import JobRun
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


def analyze(minute: Minute, settings: Settings | None = None) -> JobRun:
    """The minute's Spark analysis, the way ``ETAR_SPARK_MODE`` says (Connect or submit)."""
    settings = settings or get_settings()
    if settings.spark_mode == "connect":
        from etar.analysis.remote import analyze_minute as on_connect

        return on_connect(minute, settings)
    from etar.analysis.submit import analyze_minute as by_submit

    return by_submit(minute, settings)


def run_minute(minute: Minute, settings: Settings | None = None) -> MinuteRun:
    """Extract, analyze and report one closed minute."""
    settings = settings or get_settings()
    run = MinuteRun(minute, extract_minute(minute, settings))
    if run.skipped:
        log.info("minute %s is empty: analyze and report skipped", minute)
        return run
    run.report = analyze(minute, settings).report
    run.posted = report_minute(minute, settings)
    return run

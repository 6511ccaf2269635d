"""``etar demo``: produce for a few minutes, let Airflow run them, check every stage agrees.

For each minute it produces a known number of events (stamped inside that minute), then
waits for the scheduled ``etar_pipeline`` run of the minute and compares: events delivered
= rows in ClickHouse (``FINAL``) = the Spark report's ``total_events`` = the report on the
dashboard, with the DAG run's state and the minute-end → dashboard latency. It assumes no
other producer writes to the topic meanwhile (stop ``etar up``'s producer first).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from etar.config import Settings, get_settings
from etar.errors import EtarError
from etar.events.event import uniform_error_rates
from etar.extract.storage import ObjectMissing
from etar.minute import Minute
from etar.orchestration.airflow_api import PIPELINE_DAG, AirflowApi
from etar.produce.producer import ProduceOptions, produce
from etar.report.minute_report import read_report
from etar.warehouse import table as warehouse

log = logging.getLogger(__name__)

FINISHED = ("success", "failed")
PRODUCER_MARGIN_S = 2.5
"""Stop producing this long before a minute ends (start-up and flush of the producer)."""


@dataclass
class MinuteCheck:
    """One demo minute across every stage; ``None`` where a stage has nothing (yet)."""

    minute: Minute
    produced: int
    clickhouse: int | None = None
    spark: int | None = None
    dashboard: int | None = None
    dag_state: str | None = None
    run_id: str | None = None
    latency_s: float | None = None

    @property
    def ok(self) -> bool:
        return (self.dag_state == "success" and self.produced > 0
                and self.produced == self.clickhouse == self.spark == self.dashboard)


class ReportWatcher(threading.Thread):
    """Polls the dashboard API and notes when each minute's report first shows up."""

    def __init__(self, settings: Settings, every: float = 0.5) -> None:
        super().__init__(daemon=True, name="report-watcher")
        self.settings, self.every = settings, every
        self.seen: dict[datetime, tuple[datetime, int]] = {}
        self._stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.settings.dashboard_api_url, timeout=3) as client:
            while not self._stop.is_set():
                try:
                    for report in client.get("/reports").json():
                        minute = datetime.fromisoformat(report["minute"])
                        total = int(report["total_events"])
                        if self.seen.get(minute, (None, None))[1] != total:
                            self.seen[minute] = (datetime.now(UTC), total)
                except (httpx.HTTPError, ValueError) as exc:
                    log.debug("dashboard poll failed: %s", exc)
                self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()


def _next_minute() -> Minute:
    """Sleep until the next minute starts; that minute."""
    minute = Minute.containing(datetime.now(UTC)).next
    time.sleep(max(0.0, (minute.start - datetime.now(UTC)).total_seconds()) + 0.05)
    return minute


def run_demo(minutes: int, rate: float, settings: Settings | None = None,
             say: Callable[[str], None] = print, wait_s: float = 150.0) -> list[MinuteCheck]:
    """Produce ``minutes`` minutes at ``rate`` events/s and check what the pipeline made."""
    settings = settings or get_settings()
    with AirflowApi(settings) as api:
        api.set_paused(PIPELINE_DAG, False)
        watcher = ReportWatcher(settings)
        watcher.start()
        checks: list[MinuteCheck] = []
        try:
            for _ in range(minutes):
                minute = _next_minute()
                duration = (minute.end - datetime.now(UTC)).total_seconds() - PRODUCER_MARGIN_S
                options = ProduceOptions(
                    rate=rate, duration=duration, minute=minute,
                    error_rates=uniform_error_rates(settings.producer_error_rate))
                summary = produce(options, settings)
                if summary.failed:
                    raise EtarError(f"{summary.failed} events of minute {minute} were not "
                                    "delivered")
                checks.append(MinuteCheck(minute, summary.delivered))
                say(f"minute {minute}: produced {summary.delivered} events")
            deadline = time.monotonic() + wait_s
            last = checks[-1].minute
            say(f"waiting up to {wait_s:.0f}s for Airflow to report up to {last}…")
            while time.monotonic() < deadline and not all(
                    c.minute.start in watcher.seen for c in checks):
                time.sleep(0.5)
            _observe(checks, watcher, api, settings)
            while time.monotonic() < deadline and any(
                    c.dag_state not in FINISHED for c in checks):
                time.sleep(1)  # the runs' last task (reconcile) may still be going
                _observe(checks, watcher, api, settings)
        finally:
            watcher.stop()
    return checks


def _observe(checks: list[MinuteCheck], watcher: ReportWatcher, api: AirflowApi,
             settings: Settings) -> None:
    for check in checks:
        check.clickhouse = warehouse.count_minute(check.minute, settings=settings)
        try:
            check.spark = int(read_report(check.minute, settings)["total_events"])
        except ObjectMissing:
            check.spark = None
        seen = watcher.seen.get(check.minute.start)
        if seen is not None:
            check.dashboard = seen[1]
            check.latency_s = (seen[0] - check.minute.end).total_seconds()
        run = api.run_of_minute(check.minute)
        if run is not None:
            check.dag_state, check.run_id = run["state"], run["dag_run_id"]

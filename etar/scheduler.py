"""A minimal stand-in for the Airflow schedule: each finished minute, once, in order.

Used by ``etar up`` so the dashboard fills without Airflow. A minute is processed a grace
period after it ends, so rows still in the sink's batch are in ClickHouse by then.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from etar.config import Settings
from etar.errors import EtarError
from etar.minute import Minute
from etar.pipeline import run_minute

log = logging.getLogger(__name__)


def grace_seconds(settings: Settings) -> float:
    """How long after a minute ends it is extracted: the sink's batch time plus margin."""
    return settings.sink_batch_seconds + 5.0


def run_every_minute(settings: Settings, stop: Callable[[], bool] = lambda: False) -> None:
    """Process each minute that ends from now on, until ``stop()`` (or Ctrl-C)."""
    grace = timedelta(seconds=grace_seconds(settings))
    current = Minute.containing(datetime.now(UTC))
    while not stop():
        due = current.end + grace
        now = datetime.now(UTC)
        if now < due:
            time.sleep(min((due - now).total_seconds(), 1.0))
            continue
        try:
            result = run_minute(current, settings)
            log.info("minute %s: %s", current,
                     "empty" if result.skipped else f"report {result.report} posted")
        except EtarError as exc:
            log.error("minute %s failed: %s", current, exc)
        current = current.next

"""Events that arrive after their minute was reported are counted, and a re-run takes them in."""

from __future__ import annotations

import subprocess

import pytest

from etar import warehouse
from etar.config import Settings
from etar.late import late_minutes
from etar.pipeline import run_minute
from tests.integration.lanes import produce, recent_minute, wait_for

pytestmark = pytest.mark.integration


def test_late_events_are_counted_until_the_minute_is_rerun(
        lane: Settings, lane_sink: subprocess.Popen[bytes]) -> None:
    minute = recent_minute(12)
    produce(lane, 400, minute, seed=61)
    wait_for(lambda: warehouse.count_minute(minute, settings=lane) == 400, 60, "ingestion")
    assert run_minute(minute, lane).posted is not None
    assert late_minutes(settings=lane) == []
    produce(lane, 25, minute, seed=62)  # after the report: late
    wait_for(lambda: warehouse.count_minute(minute, settings=lane) == 425, 60, "late rows")
    (late,) = late_minutes(settings=lane)
    assert (late.minute, late.reported, late.stored, late.late_events) == (minute, 400, 425, 25)
    run_minute(minute, lane)
    assert late_minutes(settings=lane) == []

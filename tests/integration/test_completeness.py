"""A minute is complete only once the sink committed everything sent before its cut-off."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from etar import warehouse
from etar.completeness import check_minute, cutoff
from etar.config import Settings
from etar.minute import Minute
from tests.integration.lanes import env_for, start_sink, wait_for

pytestmark = pytest.mark.integration


def _minute_ending_soon(lead: float) -> Minute:
    """The minute that ends next, after sleeping until ``lead`` seconds before its end."""
    minute = Minute.containing(datetime.now(UTC))
    if (minute.end - datetime.now(UTC)).total_seconds() < lead:
        minute = minute.next
    time.sleep(max(0.0, (minute.end - datetime.now(UTC)).total_seconds() - lead))
    return minute


def test_a_slow_sink_holds_the_minute_until_it_committed_it(lane: Settings,
                                                            tmp_path: Path) -> None:
    # The sink's first flush comes 40 s after its first message: long after the cut-off.
    slow = lane.model_copy(update={"sink_batch_seconds": 40.0, "sink_idle_flush_seconds": 40.0,
                                   "sink_batch_rows": 1_000_000,
                                   "pipeline_lateness_seconds": 5.0})
    sink = start_sink(slow, tmp_path / "sink.log")
    try:
        minute = _minute_ending_soon(lead=15)
        assert not check_minute(minute, slow).complete  # still open
        # Live events in the minute's last seconds, stamped inside it.
        produced = subprocess.run(
            [sys.executable, "-m", "etar", "produce", "--rate", "300", "--duration", "4",
             "--seed", "5", "--minute", str(minute)], env=env_for(slow), capture_output=True,
            text=True, timeout=120, check=True)
        delivered = int(produced.stdout.split("delivered=")[1].split()[0])
        assert delivered > 800
        assert datetime.now(UTC) < cutoff(minute, slow), "the producer ran past the cut-off"
        time.sleep(max(0.0, (cutoff(minute, slow) - datetime.now(UTC)).total_seconds()))
        held = check_minute(minute, slow)
        assert not held.complete and sum(held.behind.values()) == delivered, held
        assert warehouse.count_minute(minute, settings=slow) < delivered
        wait_for(lambda: check_minute(minute, slow).complete, 90, "the sink to commit")
        # Complete means queryable: every event of the minute is in ClickHouse.
        assert warehouse.count_minute(minute, settings=slow) == delivered
    finally:
        sink.terminate()
        sink.wait(30)


def test_a_stopped_sink_never_completes_a_minute(lane: Settings) -> None:
    # A lateness long enough that the 50 messages sent now were sent before the cut-off.
    late = lane.model_copy(update={"pipeline_lateness_seconds": 600.0})
    minute = Minute.last_closed()
    subprocess.run([sys.executable, "-m", "etar", "produce", "--count", "50", "--rate", "0"],
                   env=env_for(late), capture_output=True, timeout=120, check=True)
    state = check_minute(minute, late, now=cutoff(minute, late))  # no sink runs on this lane
    assert not state.complete and sum(state.behind.values()) == 50, state
    assert "50 messages" in state.reason

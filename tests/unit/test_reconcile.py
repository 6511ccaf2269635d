"""The reconciliation's pure part: the window, each minute's state, which minutes are redone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from etar.config import Settings
from etar.extract.storage import day_prefixes
from etar.minute import Minute
from etar.orchestration.airflow_api import minute_of_run
from etar.orchestration.reconcile import (
    MinuteAudit,
    State,
    Window,
    choose_redo,
    classify,
    redo_run_id,
)


def minute(text: str) -> Minute:
    return Minute.parse(text)


def test_each_minute_with_rows_is_classified_against_its_report() -> None:
    a, b, c, d, e = (minute(f"2026-01-01T10:0{i}") for i in range(5))
    stored = {a: 10, b: 20, c: 30, d: 40, e: 0}
    reported = {a: 10, b: 19, d: 41, e: 0}
    audits = classify(stored, reported, running=frozenset())
    assert [(x.minute, x.rows, x.reported, x.state) for x in audits] == [
        (a, 10, 10, State.REPORTED), (b, 20, 19, State.STALE), (c, 30, None, State.MISSING),
        (d, 40, 41, State.STALE)]  # e has no rows: nothing to report


def test_a_gap_with_a_run_in_flight_is_running_and_a_right_report_stays_reported() -> None:
    a, b, c = (minute(f"2026-01-01T10:0{i}") for i in range(3))
    audits = classify({a: 5, b: 6, c: 7}, {a: 5, b: 1}, running=frozenset({a, b, c}))
    assert [x.state for x in audits] == [State.REPORTED, State.RUNNING, State.RUNNING]


def test_reports_of_minutes_without_rows_are_not_minutes_to_audit() -> None:
    assert classify({}, {minute("2026-01-01T10:00"): 3}) == []


def _audit(text: str, state: State) -> MinuteAudit:
    return MinuteAudit(minute(text), 1, None, state)


def test_redo_takes_the_oldest_gaps_within_the_bound() -> None:
    audits = [_audit("2026-01-01T10:05", State.MISSING), _audit("2026-01-01T10:01", State.STALE),
              _audit("2026-01-01T10:02", State.REPORTED), _audit("2026-01-01T10:03", State.RUNNING),
              _audit("2026-01-01T10:04", State.MISSING), _audit("2026-01-01T10:00", State.MISSING)]
    chosen = choose_redo(audits, in_flight=0, limit=3)
    assert [str(x.minute) for x in chosen] == ["2026-01-01T10:00Z", "2026-01-01T10:01Z",
                                               "2026-01-01T10:04Z"]


def test_redo_runs_in_flight_use_up_the_bound() -> None:
    audits = [_audit(f"2026-01-01T10:0{i}", State.MISSING) for i in range(5)]
    assert [str(x.minute) for x in choose_redo(audits, in_flight=2, limit=3)] == [
        "2026-01-01T10:00Z"]
    assert choose_redo(audits, in_flight=3, limit=3) == []
    assert choose_redo(audits, in_flight=5, limit=3) == []


def test_a_minute_whose_redo_failed_recently_waits() -> None:
    audits = [_audit(f"2026-01-01T10:0{i}", State.MISSING) for i in range(3)]
    chosen = choose_redo(audits, 0, 3, backoff=frozenset({minute("2026-01-01T10:00")}))
    assert [str(x.minute) for x in chosen] == ["2026-01-01T10:01Z", "2026-01-01T10:02Z"]


@pytest.mark.parametrize(("now", "first", "last"), [
    # the cut-off (2 s) + grace (30 s) of 10:29 passed at 10:30:32
    ("2026-01-02T10:30:40", "2026-01-01T10:31", "2026-01-02T10:29"),
    ("2026-01-02T10:30:31", "2026-01-01T10:31", "2026-01-02T10:28"),
    ("2026-01-02T10:30:00", "2026-01-01T10:31", "2026-01-02T10:28"),
])
def test_the_window_is_the_retention_up_to_the_minutes_left_to_their_scheduled_run(
        now: str, first: str, last: str) -> None:
    settings = Settings(_env_file=None, clickhouse_retention_hours=24,
                        pipeline_lateness_seconds=2, reconcile_grace_seconds=30)
    window = Window.at(datetime.fromisoformat(now).replace(tzinfo=UTC), settings)
    assert (window.first, window.last) == (minute(first), minute(last))


def test_a_day_window_is_listed_under_two_day_prefixes() -> None:
    assert day_prefixes(minute("2026-01-01T10:31"), minute("2026-01-02T10:29")) == [
        "2026-01-01_", "2026-01-02_"]
    assert day_prefixes(minute("2025-12-31T23:59"), minute("2026-01-01T00:00")) == [
        "2025-12-31_", "2026-01-01_"]


def test_a_redo_run_names_its_minute_and_the_run_gives_it_back() -> None:
    m = minute("2026-01-01T10:30")
    now = datetime(2026, 1, 1, 11, 0, 5, tzinfo=UTC)
    assert redo_run_id(m, now) == "reconcile__2026-01-01_10-30__20260101T110005"
    assert minute_of_run({"data_interval_start": "2026-01-01T10:30:00Z"}) == m
    assert minute_of_run({"data_interval_start": None}) is None
    assert minute_of_run({"data_interval_start": "2026-01-01T10:30:15Z"}) is None

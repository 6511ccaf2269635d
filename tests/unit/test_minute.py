"""The Minute value: parsed once, UTC bounds, object names, clear refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from etar.minute import InvalidMinute, Minute

NOW = datetime(2026, 1, 1, 10, 31, 5, tzinfo=UTC)


@pytest.mark.parametrize("text", ["2026-01-01T10:30", "2026-01-01T10:30Z",
                                  "2026-01-01T10:30:00+00:00", "2026-01-01T11:30+01:00",
                                  " 2026-01-01 10:30 "])
def test_every_spelling_of_a_utc_minute_is_the_same_minute(text: str) -> None:
    minute = Minute.parse(text, now=NOW)
    assert minute.start == datetime(2026, 1, 1, 10, 30, tzinfo=UTC)
    assert minute.end == datetime(2026, 1, 1, 10, 31, tzinfo=UTC)
    assert str(minute) == "2026-01-01T10:30Z"


def test_it_names_its_objects_and_binds_utc() -> None:
    minute = Minute.parse("2026-01-01T10:30", now=NOW)
    assert (minute.parquet_name, minute.json_name) == ("2026-01-01_10-30.parquet",
                                                       "2026-01-01_10-30.json")
    assert minute.sql_param.utcoffset() == timedelta(0)
    assert Minute.from_object_name("s3a://etar/2026-01-01_10-30.parquet") == minute
    assert minute.next.previous == minute and minute.next.start == minute.end


@pytest.mark.parametrize(("text", "reason"), [
    ("10:30", "not a minute"),
    ("2026-13-01T10:30", "not a minute"),
    ("2026-01-01", "names a day"),
    ("2026-01-01T10:30:15", "seconds must be 0"),
])
def test_malformed_minutes_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidMinute, match=reason):
        Minute.parse(text, now=NOW)


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(InvalidMinute, match="no time zone"):
        Minute.parse(datetime(2026, 1, 1, 10, 30), now=NOW)


def test_an_aware_datetime_in_another_zone_is_normalised() -> None:
    paris = timezone(timedelta(hours=1))
    assert Minute(datetime(2026, 1, 1, 11, 30, tzinfo=paris)).start.tzinfo == UTC


def test_a_minute_that_has_not_ended_is_refused_unless_asked() -> None:
    with pytest.raises(InvalidMinute, match="has not ended yet"):
        Minute.parse("2026-01-01T10:31", now=NOW)
    assert Minute.parse("2026-01-01T10:31", now=NOW, closed=False).end > NOW
    assert Minute.last_closed(NOW) == Minute.parse("2026-01-01T10:30", now=NOW)


def test_object_names_that_are_not_minutes_are_refused() -> None:
    with pytest.raises(InvalidMinute, match="not named after a minute"):
        Minute.from_object_name("s3a://etar/latest.parquet")


def test_a_data_interval_must_be_exactly_one_minute() -> None:
    start = datetime(2026, 1, 1, 10, 30, tzinfo=UTC)
    assert Minute.of_interval(start, start + timedelta(minutes=1)).start == start
    with pytest.raises(InvalidMinute, match="not one minute"):
        Minute.of_interval(start, start)  # what a plain cron string gives in Airflow 3


def test_pendulum_datetimes_from_airflow_become_plain_utc_datetimes() -> None:
    import pendulum

    start = pendulum.datetime(2026, 1, 1, 10, 30, tz="UTC")
    minute = Minute.of_interval(start, start.add(minutes=1))
    assert type(minute.start) is datetime and minute.end.tzinfo is UTC

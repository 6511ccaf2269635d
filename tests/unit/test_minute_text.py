"""Minute text: exactly the documented spellings, nothing that names another instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from etar.minute import InvalidMinute, Minute

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TEN_THIRTY = datetime(2026, 1, 1, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize("text", [
    "2026-01-01T10:30", "2026-01-01 10:30", "2026-01-01t10:30z", "2026-01-01T10:30:00",
    "2026-01-01T10:30:00.000000Z", "2026-01-01T10:30:00+00:00", "2026-01-01T10:30-00:00",
    "2026-01-01T12:00+01:30", "2026-01-01T05:30-05:00", "\t2026-01-01T10:30Z\n",
])
def test_documented_spellings(text: str) -> None:
    assert Minute.parse(text, now=NOW).start == TEN_THIRTY


@pytest.mark.parametrize(("text", "reason"), [
    ("2026-01-01T00:00:00+00:00:30", "not a minute"),  # offset with seconds
    ("2026-01-01T10:30Z trailing", "not a minute"),
    ("2026-01-01T10:30Z0", "not a minute"),
    ("2026-01-01T10", "not a minute"),  # an hour
    ("2026-01-01T10+01:00", "not a minute"),
    ("20260101T1030", "not a minute"),  # compact ISO forms
    ("2026-W01-4T10:30", "not a minute"),  # week dates
    ("2026-01-01T10:30:00+0100", "not a minute"),
    ("٢٠٢٦-01-01T10:30", "not a minute"),  # non-ASCII digits
    ("2026-01-01", "names a day"),
    ("2026-01-01T10:30:01", "seconds must be 0"),
    ("2026-01-01T10:30:00.001", "seconds must be 0"),
    ("2026-02-30T10:30", "no such date"),
    ("2026-01-01T10:30+24:00", "no such date"),
    ("0001-01-01T00:00+00:01", "out of the range"),
])
def test_everything_else_is_refused(text: str, reason: str) -> None:
    with pytest.raises(InvalidMinute, match=reason):
        Minute.parse(text, now=NOW)


def test_an_offset_with_seconds_cannot_move_a_datetime_into_another_minute() -> None:
    odd = timezone(timedelta(seconds=30))
    with pytest.raises(InvalidMinute, match="seconds must be 0"):
        Minute(datetime(2026, 1, 1, 0, 0, tzinfo=odd))
    assert Minute(datetime(2026, 1, 1, 11, 30, tzinfo=timezone(timedelta(hours=1)))).start \
        == TEN_THIRTY

"""The ``Minute``: one UTC minute of events, parsed once at the edge and passed to every stage.

It knows its bounds, the names of its objects in the bucket and the value bound to the
ClickHouse query, so no stage re-parses or re-normalises a minute.

    >>> m = Minute.parse("2026-01-01T10:30")
    >>> m.parquet_name, m.json_name, str(m)
    ('2026-01-01_10-30.parquet', '2026-01-01_10-30.json', '2026-01-01T10:30Z')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from etar.errors import ConfigError

STEM_FORMAT = "%Y-%m-%d_%H-%M"
"""Object names of a minute: ``YYYY-MM-DD_HH-MM.parquet`` / ``.json``."""

ONE_MINUTE = timedelta(minutes=1)

TEXT_FORMS = "YYYY-MM-DDTHH:MM[:00[.000…]][Z|±HH:MM] (T or a space; no offset means UTC)"
"""The minute spellings :meth:`Minute.parse` accepts, and nothing else."""

_TEXT = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<hour>\d{2}):(?P<minute>\d{2})"
    r"(?::(?P<second>\d{2})(?:\.(?P<fraction>\d{1,9}))?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?", re.IGNORECASE | re.ASCII)
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


class InvalidMinute(ConfigError):
    """A minute that is malformed, ambiguous (naive) or not closed yet."""


@dataclass(frozen=True, order=True)
class Minute:
    """A closed-open UTC interval ``[start, start + 1 min)``; ``start`` has seconds = 0."""

    start: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise InvalidMinute(f"{self.start.isoformat()} has no time zone; etar minutes are "
                                "UTC: pass an aware datetime (tzinfo=UTC)")
        try:
            start = self.start.astimezone(UTC)  # a plain datetime, even from a pendulum one
        except OverflowError:
            raise InvalidMinute(f"{self.start.isoformat()} is out of the range of dates "
                                "once in UTC") from None
        # Checked in UTC: an offset with seconds (+00:00:30) moves a :00 into another minute.
        if start.second or start.microsecond:
            raise InvalidMinute(f"{self.start.isoformat()} is not the start of a minute "
                                "(seconds must be 0)")
        object.__setattr__(self, "start", datetime(start.year, start.month, start.day,
                                                   start.hour, start.minute, tzinfo=UTC))

    @classmethod
    def parse(cls, value: str | datetime | Minute, *, closed: bool = True,
              now: datetime | None = None) -> Minute:
        """Read a minute from text in one of :data:`TEXT_FORMS` or an aware datetime.

        Text without an offset is a UTC minute; an offset (``+01:00``) is whole hours and
        minutes and the minute is converted to UTC. Anything else (a day, compact or week
        dates, an offset with seconds, trailing characters) is refused.

        ``closed`` (the default) also refuses a minute that has not ended at ``now``: its
        rows are still arriving, so no stage may read it yet.
        """
        if isinstance(value, Minute):
            minute = value
        elif isinstance(value, datetime):
            minute = cls(value)
        else:
            minute = cls(_from_text(value))
        if closed:
            minute.require_closed(now)
        return minute

    @classmethod
    def containing(cls, moment: datetime) -> Minute:
        """The minute an instant falls in (for event times, never for run parameters)."""
        if moment.tzinfo is None:
            raise InvalidMinute(f"{moment.isoformat()} has no time zone")
        return cls(moment.astimezone(UTC).replace(second=0, microsecond=0))

    @classmethod
    def of_interval(cls, start: datetime, end: datetime) -> Minute:
        """The minute an orchestrator's data interval covers; refuses any other interval."""
        minute = cls(start)
        if end != minute.end:
            raise InvalidMinute(f"the data interval {start.isoformat()} → {end.isoformat()} is "
                                "not one minute: schedule with CronDataIntervalTimetable("
                                "'* * * * *', timezone='UTC')")
        return minute

    @classmethod
    def last_closed(cls, now: datetime | None = None) -> Minute:
        """The most recent minute that has ended."""
        return cls.containing(now or datetime.now(UTC)).previous

    @classmethod
    def from_object_name(cls, name: str) -> Minute:
        """The minute of ``…/2026-01-01_10-30.parquet`` (or ``.json``)."""
        stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        try:
            return cls(datetime.strptime(stem, STEM_FORMAT).replace(tzinfo=UTC))
        except ValueError:
            raise InvalidMinute(f"{name!r} is not named after a minute "
                                "(YYYY-MM-DD_HH-MM.parquet)") from None

    @property
    def end(self) -> datetime:
        """The first instant after the minute (exclusive bound)."""
        return self.start + ONE_MINUTE

    @property
    def previous(self) -> Minute:
        return Minute(self.start - ONE_MINUTE)

    @property
    def next(self) -> Minute:
        return Minute(self.end)

    @property
    def stem(self) -> str:
        """``2026-01-01_10-30``: the minute's object names without suffix."""
        return self.start.strftime(STEM_FORMAT)

    @property
    def parquet_name(self) -> str:
        return f"{self.stem}.parquet"

    @property
    def json_name(self) -> str:
        return f"{self.stem}.json"

    @property
    def sql_param(self) -> datetime:
        """The value bound to ``{minute:DateTime('UTC')}`` (an aware UTC datetime)."""
        return self.start

    def is_closed(self, now: datetime | None = None) -> bool:
        return (now or datetime.now(UTC)) >= self.end

    def require_closed(self, now: datetime | None = None) -> None:
        """Refuse a minute whose events may still be arriving."""
        if not self.is_closed(now):
            raise InvalidMinute(f"minute {self} has not ended yet (it closes at "
                                f"{self.end:%H:%M:%S}Z); pick a minute in the past")

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%dT%H:%M}Z"


def _from_text(text: str) -> datetime:
    """The instant ``text`` names, if it is written in one of :data:`TEXT_FORMS`."""
    cleaned = text.strip()
    if _DAY.fullmatch(cleaned):
        raise InvalidMinute(f"{text!r} names a day, not a minute; e.g. 2026-01-01T10:30")
    found = _TEXT.fullmatch(cleaned)
    if found is None:
        raise InvalidMinute(f"{text!r} is not a minute; write {TEXT_FORMS}, e.g. "
                            "2026-01-01T10:30 (or 2026-01-01T10:30Z)")
    if int(found["second"] or 0) or int(found["fraction"] or 0):
        raise InvalidMinute(f"{text!r} is not the start of a minute (seconds must be 0)")
    zone = (found["zone"] or "Z").upper()
    try:
        offset = UTC if zone == "Z" else timezone(
            (-1 if zone[0] == "-" else 1) * timedelta(hours=int(zone[1:3]),
                                                       minutes=int(zone[4:6])))
        return datetime.fromisoformat(f"{found['date']}T{found['hour']}:{found['minute']}"
                                      ).replace(tzinfo=offset)
    except ValueError:  # month 13, hour 24, offset ±24:00 or beyond…
        raise InvalidMinute(f"{text!r} is not a minute: no such date, time or offset; write "
                            f"{TEXT_FORMS}") from None

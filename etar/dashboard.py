"""The dashboard's model and memory: validated minute reports in a bounded deque.

``dashboard/api.py`` serves these over HTTP; ``dashboard/ui.py`` reads them back with
:func:`fetch` to draw its charts.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from threading import Lock
from typing import Annotated, Any

import httpx
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from etar.config import Settings
from etar.events import EventType


def _iso(value: object) -> object:
    """Accept ISO 8601 text (or a datetime), never epoch numbers."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not an ISO 8601 date-time: {value!r}") from None
    if isinstance(value, datetime):
        return value
    raise ValueError("expected an ISO 8601 date-time string")


IsoDatetime = Annotated[datetime, BeforeValidator(_iso)]


class TypeCounts(BaseModel):
    """Successes and errors of one event type in a minute."""

    model_config = ConfigDict(extra="forbid", strict=True)
    success: int = Field(ge=0)
    error: int = Field(ge=0)


def _zero() -> TypeCounts:
    return TypeCounts(success=0, error=0)


class ByEventType(BaseModel):
    """Counts per event type: one field per ``EventType`` member, nothing else."""

    model_config = ConfigDict(extra="forbid", strict=True)
    PAGE_VIEW: TypeCounts = Field(default_factory=_zero)
    SEARCH: TypeCounts = Field(default_factory=_zero)
    PRODUCT_VIEW: TypeCounts = Field(default_factory=_zero)
    ADD_TO_CART: TypeCounts = Field(default_factory=_zero)
    REMOVE_FROM_CART: TypeCounts = Field(default_factory=_zero)
    CHECKOUT: TypeCounts = Field(default_factory=_zero)
    PURCHASE: TypeCounts = Field(default_factory=_zero)


class MinuteReport(BaseModel):
    """The Spark job's report of one minute (see ``etar.analysis.aggregate``)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    minute: IsoDatetime = Field(description="start of the minute, UTC")
    total_events: int = Field(ge=0)
    total_errors: int = Field(ge=0)
    error_rate: float = Field(0.0, ge=0, le=1)
    unique_users: int = Field(0, ge=0)
    revenue: float = Field(0.0, ge=0)
    by_event_type: ByEventType
    source: str | None = Field(None, description="the Parquet object the report was made from")
    generated_at: IsoDatetime | None = None

    @field_validator("minute")
    @classmethod
    def _utc_minute(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if value.second or value.microsecond:
            raise ValueError("minute must be the start of a minute (seconds = 0)")
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _totals_add_up(self) -> MinuteReport:
        counts = [getattr(self.by_event_type, t.value) for t in EventType]
        events = sum(c.success + c.error for c in counts)
        errors = sum(c.error for c in counts)
        if (events, errors) != (self.total_events, self.total_errors):
            raise ValueError(f"totals ({self.total_events} events, {self.total_errors} errors) "
                             f"differ from by_event_type ({events}, {errors})")
        return self


class ReportStore:
    """The most recent reports, one per minute, oldest first, at most ``size``."""

    def __init__(self, size: int) -> None:
        self._reports: deque[MinuteReport] = deque(maxlen=size)
        self._lock = Lock()

    def add(self, report: MinuteReport) -> None:
        """Keep ``report``, replacing an earlier one of the same minute (re-runs)."""
        with self._lock:
            kept = [r for r in self._reports if r.minute != report.minute] + [report]
            kept.sort(key=lambda r: r.minute)
            self._reports.clear()
            self._reports.extend(kept)

    def latest(self) -> MinuteReport | None:
        with self._lock:
            return self._reports[-1] if self._reports else None

    def recent(self, limit: int | None = None) -> list[MinuteReport]:
        with self._lock:
            items = list(self._reports)
        return items[-limit:] if limit else items

    def __len__(self) -> int:
        return len(self._reports)


def fetch(settings: Settings, timeout: float = 3.0) -> tuple[dict[str, Any] | None,
                                                             list[dict[str, Any]]]:
    """The latest report (None if none yet) and the recent history, from the API."""
    with httpx.Client(base_url=settings.dashboard_api_url, timeout=timeout) as client:
        latest = client.get("/report")
        latest.raise_for_status()
        history = client.get("/reports")
        history.raise_for_status()
    return (latest.json() if latest.status_code == 200 else None), history.json()

"""The minute report: the contract between the Spark job, the dashboard API and its UI.

The Spark job writes a report as JSON next to its minute's Parquet object; :func:`report_minute`
reads it back and POSTs it to the dashboard API, which validates it as a :class:`MinuteReport`;
the UI reads it back with :func:`fetch`. The bucket's reports are the record: after a restart
the API reloads its history from them (:func:`bucket_history`).

Reports are JSON as RFC 8259 defines it: :func:`loads_strict` refuses ``NaN``, ``Infinity`` and
numbers too large for a float, which Python's ``json`` module would accept.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any, NoReturn

import httpx
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from etar.config import Settings, get_settings
from etar.errors import EtarError, ServiceUnavailable
from etar.events.event import EventType
from etar.extract import storage
from etar.minute import InvalidMinute, Minute

log = logging.getLogger(__name__)


def _not_json(token: str, doc: str) -> NoReturn:
    raise json.JSONDecodeError(f"{token} is not a JSON number (RFC 8259): numbers must be finite",
                               doc, max(doc.find(token), 0))


def loads_strict(data: str | bytes) -> Any:
    """``json.loads`` without its extensions: ``NaN``, ``Infinity``, ``-Infinity`` and numbers
    that overflow a float (``1e400``) raise ``json.JSONDecodeError``, as does non-UTF-8 text."""
    try:
        doc = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError(f"not UTF-8 text ({exc.reason})", "", exc.start) from None

    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            _not_json(text, doc)
        return value

    return json.loads(doc, parse_constant=lambda token: _not_json(token, doc),
                      parse_float=finite)


def _minute(value: object) -> object:
    """A minute as :meth:`Minute.parse` reads it (text) or an aware datetime's minute."""
    if isinstance(value, Minute):
        return value.start
    if isinstance(value, bool) or not isinstance(value, str | datetime):
        raise ValueError("expected an ISO 8601 minute, e.g. 2026-01-01T10:30:00Z")
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return Minute.parse(value, closed=False).start
    except InvalidMinute as exc:
        raise ValueError(str(exc)) from None


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
ErrorCode = Annotated[str, StringConstraints(min_length=1, max_length=128)]


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
    """The Spark job's report of one minute (see ``etar.analysis.aggregation.aggregate``)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    minute: Annotated[datetime, BeforeValidator(_minute)] = Field(
        description="start of the minute: YYYY-MM-DDTHH:MM[:00][Z|±HH:MM] (no offset: UTC)")
    total_events: int = Field(ge=0)
    total_errors: int = Field(ge=0)
    error_rate: float = Field(0.0, ge=0, le=1)
    unique_users: int = Field(0, ge=0)
    revenue: float = Field(0.0, ge=0)
    by_event_type: ByEventType
    by_error_code: dict[ErrorCode, Annotated[int, Field(ge=0)]] | None = Field(
        None, description="errors per error_code (codes seen in the minute); absent from "
                          "reports made before the breakdown existed")
    source: str | None = Field(None, description="the Parquet object the report was made from")
    generated_at: IsoDatetime | None = None

    @model_validator(mode="after")
    def _totals_add_up(self) -> MinuteReport:
        counts = [getattr(self.by_event_type, t.value) for t in EventType]
        events = sum(c.success + c.error for c in counts)
        errors = sum(c.error for c in counts)
        if (events, errors) != (self.total_events, self.total_errors):
            raise ValueError(f"totals ({self.total_events} events, {self.total_errors} errors) "
                             f"differ from by_event_type ({events}, {errors})")
        expected_rate = errors / events if events else 0.0
        if "error_rate" in self.model_fields_set and abs(self.error_rate - expected_rate) > 1e-4:
            raise ValueError(f"error_rate {self.error_rate} is not total_errors / total_events "
                             f"({expected_rate:.6f})")
        if self.by_error_code is not None and sum(self.by_error_code.values()) != errors:
            raise ValueError(f"by_error_code counts {sum(self.by_error_code.values())} errors, "
                             f"total_errors is {errors}")
        if self.unique_users > self.total_events:
            raise ValueError(f"unique_users ({self.unique_users}) exceeds total_events "
                             f"({self.total_events})")
        return self


class ReportRejected(EtarError):
    """The dashboard API refused the report."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"dashboard API answered {status_code}: {message}")
        self.status_code = status_code


def post_report(report: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """POST one report (bearer token from settings); the API's answer."""
    settings = settings or get_settings()
    try:
        response = _http().post(
            f"{settings.dashboard_api_url}/report", json=report, timeout=30,
            headers={"Authorization": f"Bearer {settings.dashboard_token.get_secret_value()}"})
    except httpx.TransportError as exc:
        raise ServiceUnavailable(f"dashboard API at {settings.dashboard_api_url} is "
                                 f"unreachable ({exc})") from exc
    if response.status_code >= 400:
        raise ReportRejected(response.status_code, response.text[:1000])
    answer: dict[str, Any] = response.json()
    return answer


def read_report(minute: Minute, settings: Settings | None = None) -> dict[str, Any]:
    """The minute's JSON report as the Spark job wrote it to the bucket."""
    document: dict[str, Any] = storage.read_json(minute.json_name, settings)
    return document


def bucket_history(limit: int, settings: Settings | None = None,
                   now: datetime | None = None) -> list[MinuteReport]:
    """The newest ``limit`` valid reports in the bucket, oldest first.

    Lists one hour's prefix (``YYYY-MM-DD_HH-``) at a time, from ``now``'s hour back across
    the retention window (``clickhouse_retention_hours``), never the whole bucket, and stops
    once it has ``limit`` reports. An object that is not valid JSON, not a valid report or
    not of the minute it is named after is logged and skipped.
    """
    settings = settings or get_settings()
    s3 = storage.client(settings)
    if not s3.bucket_exists(settings.s3_bucket):
        return []  # nothing reported yet (S3 itself unreachable raises)
    hour = (now or datetime.now(UTC)).astimezone(UTC).replace(minute=0, second=0,
                                                              microsecond=0)
    found: list[MinuteReport] = []
    for back in range(settings.clickhouse_retention_hours + 1):
        prefix = f"{hour - timedelta(hours=back):%Y-%m-%d_%H-}"
        names = sorted((item.object_name for item in s3.list_objects(settings.s3_bucket, prefix)
                        if item.object_name and item.object_name.endswith(".json")),
                       reverse=True)
        for name in names:
            report = _bucket_report(name, settings)
            if report is not None:
                found.append(report)
                if len(found) == limit:
                    return found[::-1]
    return found[::-1]


def _bucket_report(name: str, settings: Settings) -> MinuteReport | None:
    """The report stored as ``name``, or None (logged) when it is not one."""
    from minio.error import S3Error
    from pydantic import ValidationError

    try:
        minute = Minute.from_object_name(name)
        response = storage.client(settings).get_object(settings.s3_bucket, name)
        try:
            report = MinuteReport.model_validate(loads_strict(response.read()))
        finally:
            response.close()
            response.release_conn()
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchObject"):  # expired between list and read
            return None
        raise
    except (InvalidMinute, ValueError, ValidationError) as exc:
        log.warning("skipping s3://%s/%s: not a valid report (%s)", settings.s3_bucket, name,
                    str(exc).splitlines()[0])
        return None
    if report.minute != minute.start:
        log.warning("skipping s3://%s/%s: it reports minute %s", settings.s3_bucket, name,
                    report.minute.isoformat())
        return None
    return report


def report_minute(minute: Minute, settings: Settings | None = None) -> dict[str, Any]:
    """Send the minute's JSON report (written by the Spark job) to the dashboard."""
    settings = settings or get_settings()
    return post_report(read_report(minute, settings), settings)


def fetch(settings: Settings, timeout: float = 3.0) -> tuple[dict[str, Any] | None,
                                                             list[dict[str, Any]]]:
    """The latest report (None if none yet) and the recent history, from the API."""
    with httpx.Client(base_url=settings.dashboard_api_url, timeout=timeout) as client:
        latest = client.get("/report")
        latest.raise_for_status()
        history = client.get("/reports")
        history.raise_for_status()
    return (latest.json() if latest.status_code == 200 else None), history.json()


@lru_cache(maxsize=1)
def _http() -> httpx.Client:
    """One pooled HTTP client per process."""
    return httpx.Client()

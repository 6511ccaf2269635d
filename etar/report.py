"""Report: read a minute's JSON from the bucket and POST it to the dashboard API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from etar import storage, warehouse
from etar.config import Settings, get_settings
from etar.errors import EtarError, ServiceUnavailable


class ReportRejected(EtarError):
    """The dashboard API refused the report."""


def post_report(report: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """POST one report (bearer token from settings); the API's answer."""
    settings = settings or get_settings()
    try:
        response = httpx.post(
            f"{settings.dashboard_api_url}/report", json=report, timeout=30,
            headers={"Authorization": f"Bearer {settings.dashboard_token.get_secret_value()}"})
    except httpx.TransportError as exc:
        raise ServiceUnavailable(f"dashboard API at {settings.dashboard_api_url} is "
                                 f"unreachable ({exc})") from exc
    if response.status_code >= 400:
        raise ReportRejected(f"dashboard API answered {response.status_code}: {response.text}")
    answer: dict[str, Any] = response.json()
    return answer


def report_minute(minute: datetime | str, settings: Settings | None = None) -> dict[str, Any]:
    """Send the minute's JSON report (written by the Spark job) to the dashboard."""
    settings = settings or get_settings()
    name = storage.object_name(warehouse.to_minute(minute), "json")
    return post_report(storage.read_json(name, settings), settings)

"""The dashboard API's history survives a restart: the real API process (the stack's own
command) on the stack's S3, killed with SIGKILL and started again, reloads the bucket's reports."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from etar.config import Settings
from etar.events.event import EventType
from etar.extract import storage
from etar.minute import Minute
from etar.report.minute_report import report_minute
from etar_stack.services import dashboard

pytestmark = pytest.mark.integration

HISTORY = 4
START_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _report(minute: Minute, events: int) -> dict[str, Any]:
    by_type = {t.value: {"success": 0, "error": 0} for t in EventType}
    by_type["PAGE_VIEW"]["success"] = events
    return {"minute": minute.start.strftime("%Y-%m-%dT%H:%M:00Z"), "total_events": events,
            "total_errors": 0, "error_rate": 0.0, "unique_users": 1, "revenue": 0.0,
            "by_event_type": by_type, "source": f"s3a://x/{minute.parquet_name}"}


def _put(settings: Settings, name: str, text: str) -> None:
    data = text.encode()
    storage.upload(name, io.BytesIO(data), "application/json", len(data), settings)


@pytest.fixture
def api(stack_settings: Settings, unique: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings of an API process of the test's own (port, token, bucket, history size)."""
    settings = stack_settings.model_copy(update={
        "s3_bucket": f"dash-{unique}", "dashboard_history": HISTORY,
        "dashboard_api_url": f"http://127.0.0.1:{_free_port()}",
        "dashboard_token": SecretStr(f"token-{unique}")})
    storage.ensure_bucket(settings)
    yield settings
    storage.drop_bucket(settings)


def _start(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """The stack's dashboard-api command, with this test's settings in its environment."""
    service = dashboard.services(settings)[0]
    env = {**os.environ, **settings.environ(
        "s3_bucket", "dashboard_history", "dashboard_api_url", "dashboard_token", "state_dir",
        "project_dir")}
    with log.open("a") as out:
        process = subprocess.Popen(service.command, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, cwd=settings.project_dir)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-2000:]
        try:
            if httpx.get(f"{settings.dashboard_api_url}/healthz",
                         timeout=2).json().get("history") != "loading":
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    process.wait(10)
    raise AssertionError(f"the API did not answer within {START_TIMEOUT:.0f} s:\n"
                         f"{log.read_text()[-2000:]}")


def _history(settings: Settings) -> list[dict[str, Any]]:
    response = httpx.get(f"{settings.dashboard_api_url}/reports", timeout=5)
    response.raise_for_status()
    history: list[dict[str, Any]] = response.json()
    return history


def test_the_history_survives_a_restart_of_the_api(api: Settings, tmp_path: Path) -> None:
    now = Minute.last_closed()
    # Minutes in the last two hours, across hour prefixes; and objects that are not reports.
    minutes = [Minute.containing(now.start - timedelta(minutes=back)) for back in (95, 61, 30)]
    for index, minute in enumerate(minutes):
        _put(api, minute.json_name, json.dumps(_report(minute, 10 + index)))
    broken = now.start - timedelta(minutes=20)
    _put(api, Minute.containing(broken).json_name,
         json.dumps(_report(Minute.containing(broken), 5)).replace("0.0", "NaN", 1))
    _put(api, Minute.containing(broken).previous.json_name,
         json.dumps(_report(Minute.containing(broken), 5)))  # named after another minute
    log = tmp_path / "api.log"

    process = _start(api, log)
    try:
        first = _history(api)
        assert [r["total_events"] for r in first] == [10, 11, 12], first
        # Two minutes reported the pipeline's way: JSON in the bucket, then POST.
        for back, events in ((5, 20), (3, 21)):
            minute = Minute.containing(now.start - timedelta(minutes=back))
            _put(api, minute.json_name, json.dumps(_report(minute, events)))
            report_minute(minute, api)
        before = _history(api)
        assert [r["total_events"] for r in before] == [11, 12, 20, 21]  # bounded: the newest
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    # While the API is down, the next minute's report cannot be posted; its JSON is there.
    missed = Minute.containing(now.start - timedelta(minutes=1))
    _put(api, missed.json_name, json.dumps(_report(missed, 22)))

    process = _start(api, log)
    try:
        after = _history(api)
        assert after[:-1] == before[1:], (before, after)
        assert after[-1]["minute"] == missed.start.strftime("%Y-%m-%dT%H:%M:00Z")
        latest = httpx.get(f"{api.dashboard_api_url}/report", timeout=5).json()
        assert latest == after[-1]
    finally:
        process.terminate()
        process.wait(10)
    assert "not a valid report" in log.read_text() and "it reports minute" in log.read_text()


def test_bucket_history_lists_by_hour_not_the_whole_bucket(api: Settings) -> None:
    """Objects outside the retention window are never listed (a prefix per hour)."""
    from etar.report.minute_report import bucket_history

    old = Minute(datetime(2020, 1, 1, 10, 30, tzinfo=UTC))
    _put(api, old.json_name, json.dumps(_report(old, 1)))
    recent = Minute.last_closed().previous
    _put(api, recent.json_name, json.dumps(_report(recent, 2)))
    assert [r.total_events for r in bucket_history(10, api)] == [2]


def test_a_missing_bucket_is_an_empty_history(api: Settings) -> None:
    from etar.report.minute_report import bucket_history

    assert bucket_history(5, api.model_copy(update={"s3_bucket": "no-such-bucket-here"})) == []

"""The reconciliation on real services: each minute with rows is classified against its report
in the bucket, a re-run closes the gap; the bucket's listings and expiry stay bounded."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from etar.config import Settings
from etar.extract import storage
from etar.minute import Minute
from etar.orchestration.pipeline import run_minute
from etar.orchestration.reconcile import State, Window, audit, reported_counts
from etar.warehouse import table as warehouse
from tests.integration.lanes import env_for, produce, recent_minute, wait_for

pytestmark = pytest.mark.integration


def _states(settings: Settings) -> dict[Minute, tuple[int, int | None, State]]:
    found = audit(settings, with_runs=False)
    return {m.minute: (m.rows, m.reported, m.state) for m in found.minutes}


def test_missing_and_stale_minutes_are_found_until_they_are_rerun(
        lane: Settings, lane_sink: subprocess.Popen[bytes]) -> None:
    reported, missing, stale = recent_minute(12), recent_minute(11), recent_minute(10)
    for minute, count, seed in ((reported, 400, 61), (missing, 300, 62), (stale, 200, 63)):
        produce(lane, count, minute, seed=seed)
    wait_for(lambda: [warehouse.count_minute(m, settings=lane) for m in (reported, missing, stale)]
             == [400, 300, 200], 60, "ingestion")
    assert run_minute(reported, lane).posted is not None
    assert run_minute(stale, lane).posted is not None
    produce(lane, 25, stale, seed=64)  # after its report: the report is stale
    wait_for(lambda: warehouse.count_minute(stale, settings=lane) == 225, 60, "late rows")
    assert _states(lane) == {reported: (400, 400, State.REPORTED),
                             missing: (300, None, State.MISSING),
                             stale: (225, 200, State.STALE)}
    code, shown = _audit_cli(lane)
    assert code == 2 and shown == [
        {"minute": str(missing), "rows": 300, "reported": None, "state": "missing"},
        {"minute": str(stale), "rows": 225, "reported": 200, "state": "stale"}]
    run_minute(missing, lane)
    run_minute(stale, lane)
    assert _states(lane) == {reported: (400, 400, State.REPORTED),
                             missing: (300, 300, State.REPORTED),
                             stale: (225, 225, State.REPORTED)}
    code, shown = _audit_cli(lane, "--all")
    assert code == 0 and [m["state"] for m in shown] == ["reported"] * 3


def _audit_cli(settings: Settings, *args: str) -> tuple[int, list[dict[str, object]]]:
    """`etar audit --json`: its exit code and the minutes it printed."""
    result = subprocess.run([sys.executable, "-m", "etar", "audit", "--json", *args],
                            env=env_for(settings), capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode in (0, 2), result.stderr[-2000:]
    return result.returncode, json.loads(result.stdout)


def _put(settings: Settings, name: str) -> None:
    storage.upload(name, io.BytesIO(b"{}"), "application/json", 2, settings)


def test_windows_are_listed_by_prefix_and_expired_objects_deleted_oldest_first(
        lane: Settings) -> None:
    now = Minute.containing(datetime.now(UTC))
    expired = [Minute.containing(now.start - timedelta(hours=h)) for h in (30, 26, 25)]
    kept = [Minute.containing(now.start - timedelta(hours=h)) for h in (23, 1)]
    for minute in expired + kept:
        _put(lane, minute.json_name)
        _put(lane, minute.parquet_name)
    _put(lane, "notes.txt")
    first = Minute.containing(now.start - timedelta(hours=24)).next
    assert set(storage.list_minutes(first, now, ".json", lane)) == set(kept)
    assert set(storage.list_minutes(expired[0], expired[1], ".parquet", lane)) == set(
        expired[:2])
    assert storage.expire_minutes(first, limit=4, settings=lane) == [
        expired[0].json_name, expired[0].parquet_name, expired[1].json_name,
        expired[1].parquet_name]
    assert storage.expire_minutes(first, limit=4, settings=lane) == [
        expired[2].json_name, expired[2].parquet_name]
    assert storage.expire_minutes(first, limit=4, settings=lane) == []
    left = {item.object_name for item in
            storage.client(lane).list_objects(lane.s3_bucket, recursive=True)}
    assert left == {name for m in kept for name in (m.json_name, m.parquet_name)} | {
        "notes.txt"}


@pytest.fixture
def bucket(stack_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """A bucket of the test's own and a state folder for the report-totals cache: S3 only (no
    ``unique``, whose teardown asks the registry)."""
    settings = stack_settings.model_copy(update={"s3_bucket": f"lane-{uuid.uuid4().hex[:10]}",
                                                 "state_dir": tmp_path / ".etar"})
    storage.ensure_bucket(settings)
    yield settings
    storage.drop_bucket(settings)


def _put_report(settings: Settings, minute: Minute, total: int) -> None:
    body = json.dumps({"minute": str(minute), "total_events": total}).encode()
    storage.upload(minute.json_name, io.BytesIO(body), "application/json", len(body), settings)


def _reads(settings: Settings, window: Window) -> tuple[dict[Minute, int], list[str]]:
    """``reported_counts`` of ``window``, and the objects it GETs from S3 (its HTTP trace; the
    listings, GETs of the bucket itself, are not counted)."""
    trace = io.StringIO()
    s3 = storage.client(settings)
    s3.trace_on(trace)
    try:
        totals = reported_counts(window, settings)
    finally:
        s3.trace_off()
    got = re.findall(rf"^GET /{re.escape(settings.s3_bucket)}/([^?\s]+)", trace.getvalue(),
                     re.MULTILINE)
    return totals, got


def test_an_audit_reads_again_only_the_reports_whose_etag_changed(bucket: Settings) -> None:
    """The reconciliation runs every minute over 24 h of reports: each audit GETs only the
    reports written since the last one (a local cache of total_events by ETag)."""
    minutes = [recent_minute(ago) for ago in (14, 13, 12)]
    for total, minute in enumerate(minutes, start=100):
        _put_report(bucket, minute, total)
    window = Window(minutes[0], minutes[-1])
    expected = {minute: total for total, minute in enumerate(minutes, start=100)}

    totals, got = _reads(bucket, window)
    assert totals == expected and sorted(got) == sorted(m.json_name for m in minutes)
    totals, got = _reads(bucket, window)
    assert totals == expected and got == []  # nothing changed: nothing read

    _put_report(bucket, minutes[1], 250)  # a redo run replaced one report
    totals, got = _reads(bucket, window)
    assert totals == {**expected, minutes[1]: 250} and got == [minutes[1].json_name]
    totals, got = _reads(bucket, window)
    assert totals == {**expected, minutes[1]: 250} and got == []

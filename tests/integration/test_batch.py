"""The batch plane against the real services: extract to S3, the Spark job, the report."""

from __future__ import annotations

import io
import subprocess

import pyarrow.parquet as pq
import pytest

from etar.analysis.remote import analyze_minute as analyze_on_connect
from etar.analysis.submit import AnalysisFailed, run_job
from etar.analysis.submit import analyze_minute as analyze_by_submit
from etar.config import Settings
from etar.extract import storage
from etar.extract.parquet import ARROW_SCHEMA, extract_minute, to_arrow
from etar.minute import Minute
from etar.warehouse import table as warehouse
from tests.integration.lanes import produce, recent_minute, wait_for

pytestmark = pytest.mark.integration


def _parquet(name: str, settings: Settings) -> pq.ParquetFile:
    response = storage.client(settings).get_object(settings.s3_bucket, name)
    try:
        return pq.ParquetFile(io.BytesIO(response.read()))
    finally:
        response.close()
        response.release_conn()


@pytest.fixture
def ingested(lane: Settings, lane_sink: subprocess.Popen[bytes]) -> tuple[Settings, Minute]:
    """A lane with 2,500 events in one recent minute, all in ClickHouse."""
    minute = recent_minute(5)
    produce(lane, 2_500, minute, seed=44)
    wait_for(lambda: warehouse.count_minute(minute, settings=lane) == 2_500, 60, "ingestion")
    return lane, minute


def test_extract_writes_the_minute_as_typed_parquet(ingested: tuple[Settings, Minute]) -> None:
    lane, minute = ingested
    name = extract_minute(minute, lane)
    assert name == minute.parquet_name
    parquet = _parquet(name, lane)
    assert parquet.metadata.num_rows == warehouse.count_minute(minute, settings=lane) == 2_500
    assert parquet.schema_arrow.remove_metadata() == ARROW_SCHEMA
    table = parquet.read()
    assert len(table.column("event_id").unique()) == 2_500
    assert all(minute.start <= ts < minute.end for ts in table.column("event_ts").to_pylist())
    # Re-running the minute overwrites the same object.
    assert extract_minute(minute, lane) == name
    objects = [o.object_name for o in storage.client(lane).list_objects(lane.s3_bucket)]
    assert objects.count(name) == 1


def test_empty_minute_gives_none_and_no_object(lane: Settings) -> None:
    minute = recent_minute(30)
    assert extract_minute(minute, lane) is None
    assert not storage.exists(minute.parquet_name, lane)


def test_spark_report_equals_clickhouse_group_by(ingested: tuple[Settings, Minute]) -> None:
    lane, minute = ingested
    name = extract_minute(minute, lane)
    assert name is not None
    run = run_job(storage.s3a_url(name, lane), lane)
    assert run.report == name.replace(".parquet", ".json")
    assert 0 < run.compute_s < run.wall_s
    report = storage.read_json(run.report, lane)
    rows = warehouse.client(lane).query(
        f"SELECT toString(event_type), toString(status), count() FROM "
        f"{lane.clickhouse_table} FINAL WHERE event_minute = {{m:DateTime('UTC')}} "
        "GROUP BY event_type, status", parameters={"m": minute.sql_param}).result_rows
    expected: dict[str, dict[str, int]] = {}
    for event_type, status, count in rows:
        expected.setdefault(event_type, {"success": 0, "error": 0})[status.lower()] = count
    assert {t: c for t, c in report["by_event_type"].items() if c["success"] + c["error"]} \
        == expected
    assert report["total_events"] == sum(count for *_, count in rows) == 2_500
    assert report["total_errors"] == sum(c for _, s, c in rows if s == "ERROR")
    codes = warehouse.client(lane).query(
        f"SELECT ifNull(error_code, '(none)'), count() FROM {lane.clickhouse_table} FINAL "
        "WHERE event_minute = {m:DateTime('UTC')} AND status = 'ERROR' GROUP BY error_code",
        parameters={"m": minute.sql_param}).result_rows
    assert report["by_error_code"] == dict(codes) and len(codes) > 3
    assert list(report["by_error_code"].values()) == sorted(dict(codes).values(), reverse=True)
    assert report["minute"] == minute.start.strftime("%Y-%m-%dT%H:%M:00Z")
    assert report["source"] == storage.s3a_url(name, lane)
    assert report["generated_at"]


def test_spark_job_fails_clearly_on_missing_or_unreadable_objects(lane: Settings) -> None:
    with pytest.raises(AnalysisFailed) as missing:
        run_job(storage.s3a_url("2020-01-01_00-00.parquet", lane), lane)
    assert missing.value.returncode == 2 and "no such object" in str(missing.value)
    storage.upload("2020-01-01_00-01.parquet", io.BytesIO(b"not parquet"), "text/plain", 11,
                   lane)
    with pytest.raises(AnalysisFailed) as unreadable:
        run_job(storage.s3a_url("2020-01-01_00-01.parquet", lane), lane)
    assert unreadable.value.returncode == 3 and "Parquet" in str(unreadable.value)


def test_spark_job_fails_clearly_when_s3_is_unreachable(lane: Settings) -> None:
    offline = lane.model_copy(update={"s3_endpoint": "http://127.0.0.1:1"})
    with pytest.raises(AnalysisFailed) as unreachable:
        run_job(storage.s3a_url("2020-01-01_00-00.parquet", offline), offline)
    assert unreachable.value.returncode == 4


def test_spark_connect_and_spark_submit_give_the_same_report(
        ingested: tuple[Settings, Minute]) -> None:
    lane, minute = ingested
    assert extract_minute(minute, lane) == minute.parquet_name
    by_submit = analyze_by_submit(minute, lane)
    submitted = storage.read_json(by_submit.report, lane)
    on_connect = analyze_on_connect(minute, lane)
    connected = storage.read_json(on_connect.report, lane)
    assert on_connect.report == by_submit.report == minute.json_name
    for report in (submitted, connected):
        assert report.pop("generated_at")
    assert connected == submitted
    assert connected["total_events"] == 2_500


def test_spark_connect_fails_like_the_job_on_a_missing_object(lane: Settings) -> None:
    with pytest.raises(AnalysisFailed) as missing:
        analyze_on_connect(Minute.parse("2020-01-01T00:00"), lane)
    assert missing.value.returncode == 2 and "no such object" in str(missing.value)


def test_the_clickhouse_written_parquet_equals_the_pandas_path(
        ingested: tuple[Settings, Minute]) -> None:
    """The extract ClickHouse writes holds what the former pandas → Arrow path wrote."""
    lane, minute = ingested
    name = extract_minute(minute, lane)
    assert name is not None
    written = _parquet(name, lane).read()
    former = to_arrow(warehouse.read_minute(minute, settings=lane, uuid_as_text=True))
    assert written.schema.remove_metadata() == former.schema == ARROW_SCHEMA
    order = [("event_id", "ascending")]
    assert written.sort_by(order).to_pylist() == former.sort_by(order).to_pylist()

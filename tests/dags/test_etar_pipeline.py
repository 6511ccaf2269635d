"""The etar_pipeline DAG: its shape, one minute through Airflow's own runner, and scheduled
runs on the Celery workers of the native stack."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest

from etar.config import Settings
from etar.extract import storage
from etar.minute import Minute
from etar.report.minute_report import read_report
from etar.warehouse import table as warehouse
from tests.dags.airflow_runner import dag_test, run_python
from tests.integration.lanes import produce, recent_minute, wait_for

SHAPE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get("etar_pipeline")
print("RESULT " + json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "timetable": type(dag.timetable).__name__, "summary": dag.timetable.expression,
    "timezone": str(dag.timetable.timezone), "catchup": dag.catchup,
    "max_active_runs": dag.max_active_runs,
    "tasks": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks},
    "types": {t.task_id: type(t).__name__ for t in dag.tasks},
    "timeouts": {t.task_id: t.execution_timeout.total_seconds() for t in dag.tasks},
    "retries": {t.task_id: t.retries for t in dag.tasks},
    "sensor_mode": dag.get_task("wait_for_sink").mode,
}))
"""


def test_the_dag_parses_with_the_specified_shape(stack_settings: Settings) -> None:
    result = run_python(SHAPE, stack_settings, str(stack_settings.dags_folder), timeout=180)
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    shape = json.loads(line.removeprefix("RESULT "))
    assert shape["errors"] == {}
    assert shape["timetable"] == "CronDataIntervalTimetable"
    assert (shape["summary"], shape["timezone"]) == ("* * * * *", "UTC")
    assert shape["catchup"] is False and 1 <= shape["max_active_runs"] <= 8
    assert shape["tasks"] == {"wait_for_sink": ["extract"], "extract": ["analyze"],
                              "analyze": ["report"], "report": [], "reconcile": []}
    expected = {"connect": "_PythonDecoratedOperator", "submit": "SparkSubmitOperator"}
    assert shape["types"]["analyze"] == expected[stack_settings.spark_mode]
    assert shape["sensor_mode"] == "reschedule"
    assert all(seconds > 0 for seconds in shape["timeouts"].values())
    assert all(shape["retries"][task] >= 1 for task in ("wait_for_sink", "extract", "analyze",
                                                        "report", "reconcile"))


@pytest.mark.integration
@pytest.mark.usefixtures("paused_pipeline")
def test_one_minute_through_airflow_equals_clickhouse(
        lane: Settings, lane_sink: subprocess.Popen[bytes]) -> None:
    minute = recent_minute(4)
    produce(lane, 3_000, minute, seed=91)
    wait_for(lambda: warehouse.count_minute(minute, settings=lane) == 3_000, 60, "ingestion")
    run = dag_test(lane, minute.end.isoformat())
    assert run["interval"] == [minute.start.isoformat(), minute.end.isoformat()]
    assert run["state"] == "success", run["tasks"]
    assert run["tasks"] == {"wait_for_sink": "success", "extract": "success",
                            "analyze": "success", "report": "success",
                            "reconcile": "skipped"}  # only scheduled runs reconcile
    assert storage.exists(minute.parquet_name, lane) and storage.exists(minute.json_name, lane)
    report = read_report(minute, lane)
    assert report["total_events"] == warehouse.count_minute(minute, settings=lane) == 3_000
    on_dashboard = [r for r in _dashboard_reports(lane)
                    if r["minute"] == minute.start.strftime("%Y-%m-%dT%H:%M:00Z")]
    assert [r["total_events"] for r in on_dashboard] == [3_000]


@pytest.mark.integration
@pytest.mark.usefixtures("paused_pipeline")
def test_an_empty_minute_skips_analyze_and_report(lane: Settings) -> None:
    minute = recent_minute(6)  # the lane's table is new: every minute is empty
    run = dag_test(lane, minute.end.isoformat())
    assert run["tasks"] == {"wait_for_sink": "success", "extract": "skipped",
                            "analyze": "skipped", "report": "skipped",
                            "reconcile": "skipped"}
    assert not storage.exists(minute.parquet_name, lane)


@pytest.mark.integration
@pytest.mark.usefixtures("paused_pipeline")
def test_a_failing_spark_job_fails_analyze_with_its_message(lane: Settings) -> None:
    minute = recent_minute(8)  # nothing extracted: the job finds no object
    run = dag_test(lane, minute.end.isoformat(), mark_success="^(wait_for_sink|extract)$")
    assert run["tasks"]["analyze"] == "failed" and run["tasks"]["report"] == "upstream_failed"
    assert f"no such object: s3a://{lane.s3_bucket}/{minute.parquet_name}" \
        in run["output"]


@pytest.mark.integration
def test_scheduled_minutes_on_celery_agree_with_what_was_produced(
        stack_settings: Settings) -> None:
    """`etar demo`: two minutes produced live, run by the scheduler on the Celery worker."""
    result = subprocess.run([sys.executable, "-m", "etar", "demo", "--minutes", "2", "--rate",
                             "150", "--json"], capture_output=True, text=True, timeout=600,
                            check=False)
    checks = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(checks) == 2
    first, second = (Minute.parse(c["minute"]) for c in checks)
    assert second.start - first.start == timedelta(minutes=1)
    for check in checks:
        assert check["dag_state"] == "success"
        assert check["produced"] == check["clickhouse"] == check["spark"] \
            == check["dashboard"] > 5_000
        assert 0 < check["latency_s"] < 60


def _dashboard_reports(settings: Settings) -> list[dict[str, object]]:
    import httpx

    reports: list[dict[str, object]] = httpx.get(f"{settings.dashboard_api_url}/reports",
                                                 timeout=5).json()
    return reports

"""# etar_pipeline

Every minute, the minute of the run's **data interval** (UTC) goes through the batch plane:

1. `wait_for_sink` — the minute is complete once the sink committed everything sent before
   its end plus the allowed lateness (`etar.orchestration.completeness`); a sensor in
   reschedule mode.
2. `extract` — the minute's partition → `YYYY-MM-DD_HH-MM.parquet` in the bucket; an empty
   minute is *skipped* (so are the tasks after it).
3. `analyze` — `etar.analysis.aggregation` on that object → `YYYY-MM-DD_HH-MM.json` next to
   it: on the warm Spark Connect server (`ETAR_SPARK_MODE=connect`, the native stack), or as a
   `SparkSubmitOperator` from etar's submit spec, master from the `spark_default` connection
   (`submit`, the compose stack's Spark cluster).
4. `report` — that JSON posted to the dashboard API.

Beside that chain, `reconcile` (`etar.orchestration.reconcile`) checks every minute of the
retention window: a minute with rows in ClickHouse whose report is missing or does not equal
its `FINAL` count (a sensor that timed out, a run that failed, rows that came after the report,
a minute no run was created for) gets a new run of this DAG for its data interval (run id
`reconcile__…`), oldest first, at most `ETAR_RECONCILE_MAX_REDO` in flight; objects older than
the retention are deleted from the bucket. Only scheduled runs reconcile: a redo or manual run
skips it.

Any failure fails its task with one line naming the service or input
(`etar.orchestration.failures`): a service down or restarting is retried by Airflow; bad data
or a bad report is not.

Every task is idempotent for its interval: clearing or backfilling a minute rewrites the same
two objects and replaces the dashboard's report of that minute. This file only wires `etar`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import CronDataIntervalTimetable, PokeReturnValue, dag, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from etar.analysis.mode import on_connect
from etar.analysis.submit import minute_source, submit_spec
from etar.config import get_settings
from etar.minute import Minute

SETTINGS = get_settings()
T = TypeVar("T")


def _guarded(stage: str, work: Callable[[], T]) -> T:
    """Run a task's work; any exception becomes a one-line failure, retried when transient."""
    from etar.orchestration.failures import describe, transient

    try:
        return work()
    except AirflowException:
        raise
    except Exception as exc:
        message = f"{stage} failed: {describe(exc)}"
        if transient(exc):
            raise AirflowException(f"{message} (transient: retried)") from exc
        raise AirflowFailException(f"{message} (not retried)") from exc


def _minute(data_interval_start: datetime | None, data_interval_end: datetime | None) -> Minute:
    assert data_interval_start is not None and data_interval_end is not None
    return Minute.of_interval(data_interval_start, data_interval_end)


def _source(data_interval_start: datetime, data_interval_end: datetime) -> str:
    """The run's Parquet object as Spark reads it (a template macro for `analyze`)."""
    return minute_source(Minute.of_interval(data_interval_start, data_interval_end))


@dag(
    schedule=CronDataIntervalTimetable("* * * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4 + SETTINGS.reconcile_max_redo,  # redo runs never hold a minute's run back
    dagrun_timeout=timedelta(minutes=10),
    default_args={"retries": 2, "retry_delay": timedelta(seconds=5),
                  "retry_exponential_backoff": True, "max_retry_delay": timedelta(seconds=30)},
    user_defined_macros={"minute_source": _source},
    doc_md=__doc__,
    tags=["etar"],
)
def etar_pipeline() -> None:
    @task.sensor(mode="reschedule", poke_interval=2,
                 timeout=SETTINGS.pipeline_sink_timeout_seconds,
                 execution_timeout=timedelta(seconds=60))
    def wait_for_sink(data_interval_start: datetime | None = None,
                      data_interval_end: datetime | None = None) -> PokeReturnValue:
        from etar.orchestration.completeness import wait_briefly_for_minute

        minute = _minute(data_interval_start, data_interval_end)
        state = _guarded("wait_for_sink", lambda: wait_briefly_for_minute(minute))
        print(f"minute {state.minute}: {state.reason}")
        return PokeReturnValue(is_done=state.complete)

    @task(execution_timeout=timedelta(minutes=2))
    def extract(data_interval_start: datetime | None = None,
                data_interval_end: datetime | None = None) -> str:
        from etar.extract.parquet import extract_minute

        minute = _minute(data_interval_start, data_interval_end)
        name = _guarded("extract", lambda: extract_minute(minute))
        if name is None:
            raise AirflowSkipException(f"minute {minute} has no events: nothing to analyze")
        return name

    @task(task_id="analyze", execution_timeout=timedelta(minutes=5))
    def analyze_on_connect(data_interval_start: datetime | None = None,
                           data_interval_end: datetime | None = None) -> str:
        from etar.analysis.remote import analyze_minute

        minute = _minute(data_interval_start, data_interval_end)
        run = _guarded("analyze", lambda: analyze_minute(minute))
        print(f"report {run.report}: wall {run.wall_s:.2f}s, compute {run.compute_s:.2f}s")
        return run.report

    analyze = analyze_on_connect() if on_connect(SETTINGS) else SparkSubmitOperator(
        task_id="analyze",
        conn_id="spark_default",
        execution_timeout=timedelta(minutes=5),
        **submit_spec("{{ minute_source(data_interval_start, data_interval_end) }}", SETTINGS,
                      name="etar-analyze-{{ data_interval_start.strftime('%Y-%m-%d_%H-%M') }}"
                      ).operator_kwargs(),
    )

    @task(execution_timeout=timedelta(minutes=1))
    def report(data_interval_start: datetime | None = None,
               data_interval_end: datetime | None = None) -> dict[str, Any]:
        from etar.report.minute_report import report_minute

        minute = _minute(data_interval_start, data_interval_end)
        return _guarded("report", lambda: report_minute(minute))

    @task(execution_timeout=timedelta(minutes=2), retries=1, max_active_tis_per_dag=1)
    def reconcile(dag_run: Any = None) -> dict[str, Any]:
        from etar.orchestration.reconcile import reconcile as reconcile_window

        if dag_run is None or dag_run.run_type != "scheduled":
            raise AirflowSkipException("only scheduled runs reconcile (one a minute); this "
                                       "one is a redo or a manual run")
        done = _guarded("reconcile", reconcile_window)
        print(done.audit.summary())
        for item in done.redone:
            print(f"minute {item.minute}: {item.state} ({item.rows} rows, report "
                  f"{item.reported}): run triggered")
        if done.expired:
            print(f"deleted {len(done.expired)} expired objects, {done.expired[0]} first")
        if done.expired_runs:
            print(f"deleted the executed notebooks of {len(done.expired_runs)} expired minutes")
        return {"summary": done.audit.summary(),
                "gaps": [m.as_dict() for m in done.audit.gaps[:50]],  # the oldest 50
                "redone": [str(m.minute) for m in done.redone], "expired": len(done.expired)}

    wait_for_sink() >> extract() >> analyze >> report()
    reconcile()


etar_pipeline()

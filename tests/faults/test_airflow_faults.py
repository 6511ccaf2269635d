"""Kill -9 an Airflow component while the DAG runs one minute: the run still ends with the
right report (retried by Airflow, or re-run where the run itself was lost)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from etar.config import Settings
from etar.orchestration.airflow_api import PIPELINE_DAG, AirflowApi
from etar.orchestration.pipeline import run_minute
from etar.report.minute_report import read_report
from tests.faults.harness import (
    FaultRow,
    assert_reconciled,
    dead_letter_offsets,
    ingested_minute,
    kill,
    reconcile,
    wait_restarted,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]

RUN_TIMEOUT = 300.0
"""A killed component's run must end within this (restart + task heartbeat timeout + retry)."""


def _states(api: AirflowApi, run_id: str) -> dict[str, str | None]:
    return api.task_states(PIPELINE_DAG, run_id)


def _kill_during_dag_run(settings: Settings, api: AirflowApi, row: FaultRow, service: str,
                         count: int, seed: int, kill_when: set[str]) -> None:
    minute = ingested_minute(settings, count, seed)
    dlq = dead_letter_offsets(settings)
    run: dict[str, Any] = api.trigger_minute(PIPELINE_DAG, minute,
                                             f"manual__faults_{minute.stem}_{time.time_ns()}")
    run_id = run["dag_run_id"]
    assert run["data_interval_start"].startswith(minute.start.strftime("%Y-%m-%dT%H:%M"))
    wait_until(lambda: any(_states(api, run_id).get(task) == "running" for task in kill_when),
               180, f"a task of {sorted(kill_when)} running")
    old = kill(settings, service)
    killed = time.monotonic()
    restart_s = wait_restarted(settings, service, old)
    report_total = None
    try:
        wait_until(lambda: api.run(PIPELINE_DAG, run_id)["state"] in ("success", "failed"),
                   RUN_TIMEOUT, f"run {run_id} to end")
        state = api.run(PIPELINE_DAG, run_id)["state"]
        tries = {task: ti.get("try_number") for task, ti in
                 api.task_instances(PIPELINE_DAG, run_id).items()}
        row.note = f"{service} back in {restart_s:.0f}s; DAG run {state}; tries {tries}"
        if state != "success":  # the run itself was lost: the minute is re-run
            run_minute(minute, settings)
            row.note += "; minute re-run"
        row.recover_s = time.monotonic() - killed
        report_total = int(read_report(minute, settings)["total_events"])
    finally:
        reconcile(row, settings, minute, count, report_total, dlq)
    assert_reconciled(row)


def test_celery_worker_killed_mid_task(stack_settings: Settings, api: AirflowApi,
                                       fault_row: FaultRow, scale: tuple[int, float]) -> None:
    _kill_during_dag_run(stack_settings, api, fault_row, "airflow-worker", scale[0], 1401,
                         {"extract", "analyze", "report"})


def test_airflow_scheduler_killed(stack_settings: Settings, api: AirflowApi,
                                  fault_row: FaultRow, scale: tuple[int, float]) -> None:
    _kill_during_dag_run(stack_settings, api, fault_row, "airflow-scheduler", scale[0], 1402,
                         {"wait_for_sink", "extract", "analyze"})

"""The cluster topology with Airflow's two Celery workers (``make cluster-airflow``: the
cluster suite's services plus Postgres, Redis, Airflow and the dashboard API).

A worker killed mid-task, kept down, so the task's retry has to run on the other worker; and
``etar demo`` on this topology. Marked ``cluster_airflow``: ``make cluster`` leaves them out
(its stack has no Airflow, which would add minutes of start-up to every fault run).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from etar.config import AIRFLOW_CLUSTER_WORKERS, Settings
from etar.orchestration.airflow_api import PIPELINE_DAG, AirflowApi
from etar.report.minute_report import read_report
from etar_stack import stack
from tests.faults.harness import (
    FaultRow,
    assert_reconciled,
    dead_letter_offsets,
    ingested_minute,
    kill,
    reconcile,
    service_pid,
    wait_until,
)
from tests.integration.lanes import env_for
from tests.pipeline_state import pipeline_paused

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.cluster_airflow]

RUN_TIMEOUT = 300.0
"""The run must end within this (task heartbeat timeout + retry on the other worker)."""
WORKERS = [f"airflow-worker-{n}" for n in range(1, AIRFLOW_CLUSTER_WORKERS + 1)]


@pytest.fixture
def api(cluster_settings: Settings) -> Iterator[AirflowApi]:
    """etar_pipeline unpaused for the test (its state restored after)."""
    state = stack(cluster_settings).read_state() or {}
    missing = [w for w in WORKERS if w not in state.get("services", {})]
    if missing:
        pytest.skip(f"the stack runs no {missing} (make cluster-airflow)")
    with pipeline_paused(cluster_settings, False) as client:
        yield client


def _worker_of(settings: Settings, pid: int) -> str | None:
    """The Celery worker service whose process tree holds ``pid`` (both run on this host, so
    the task instance's hostname cannot tell them apart)."""
    workers = {service_pid(settings, name): name for name in WORKERS}
    while pid > 1:
        if pid in workers:
            return workers[pid]
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        pid = int(stat.rpartition(")")[2].split()[1])
    return None


def _running_on(settings: Settings, api: AirflowApi, run_id: str,
                tasks: set[str]) -> tuple[str, str] | None:
    for task, ti in api.task_instances(PIPELINE_DAG, run_id).items():
        if task in tasks and ti.get("state") == "running" and ti.get("pid"):
            worker = _worker_of(settings, int(ti["pid"]))
            if worker:
                return task, worker
    return None


def test_celery_worker_killed_mid_task(cluster_settings: Settings, api: AirflowApi,
                                       cluster_row: FaultRow) -> None:
    """kill -9 the worker running a task of a minute's DAG run and keep it down: the task is
    retried on the other worker, the run succeeds, the minute is reported once."""
    settings, row = cluster_settings, cluster_row
    count = 3_000
    minute = ingested_minute(settings, count, seed=2405)
    dlq = dead_letter_offsets(settings)
    run: dict[str, Any] = api.trigger_minute(PIPELINE_DAG, minute,
                                             f"manual__cluster_{minute.stem}_{time.time_ns()}")
    run_id = run["dag_run_id"]
    found: list[tuple[str, str]] = []

    def running() -> bool:
        hit = _running_on(settings, api, run_id, {"extract", "analyze", "report"})
        found.extend([hit] if hit else [])
        return hit is not None

    wait_until(running, 180, "a task of extract/analyze/report running on a worker")
    task, victim = found[-1]
    other = next(w for w in WORKERS if w != victim)
    other_pid = service_pid(settings, other)
    stack(settings).hold(victim, RUN_TIMEOUT)
    try:
        dead = kill(settings, victim)
        killed = time.monotonic()
        wait_until(lambda: api.run(PIPELINE_DAG, run_id)["state"] in ("success", "failed"),
                   RUN_TIMEOUT, f"run {run_id} to end")
        row.recover_s = time.monotonic() - killed
        assert service_pid(settings, victim) == dead, f"{victim} came back during its hold"
    finally:
        stack(settings).release(victim)
    state = api.run(PIPELINE_DAG, run_id)["state"]
    ti = api.task_instances(PIPELINE_DAG, run_id)[task]
    assert state == "success", f"run {run_id} {state}: {ti}"
    assert service_pid(settings, other) == other_pid, f"{other} was restarted"
    assert int(ti["try_number"]) >= 2, f"{task} was not retried: {ti}"
    report_total = int(read_report(minute, settings)["total_events"])
    row.note = (f"{victim} killed while it ran {task} and held down; try "
                f"{ti['try_number']} ran on {other}; DAG run {state}")
    reconcile(row, settings, minute, count, report_total, dlq)
    assert_reconciled(row)


def test_demo_on_the_cluster(cluster_settings: Settings, api: AirflowApi) -> None:
    """``etar demo`` (produce, let Airflow run each minute, every stage agrees) passes on the
    cluster topology."""
    began = time.monotonic()
    demo = subprocess.run([sys.executable, "-m", "etar", "demo", "--minutes", "2", "--rate",
                           "100", "--json"], env=env_for(cluster_settings), capture_output=True,
                          text=True, timeout=600)
    assert demo.returncode == 0, f"{demo.stdout[-3000:]}{demo.stderr[-3000:]}"
    checks = json.loads(demo.stdout.strip().splitlines()[-1])
    assert len(checks) == 2 and all(c["ok"] and c["produced"] > 0 for c in checks), checks
    print(f"etar demo on the cluster: {checks} in {time.monotonic() - began:.0f}s")

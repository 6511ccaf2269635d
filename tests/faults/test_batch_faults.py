"""Kill -9 a service of the batch plane while a minute runs: the run fails clearly and in
bounded time, and a re-run of the minute gives the right report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from etar.config import Settings
from etar.minute import Minute
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
from tests.integration.lanes import env_for
from tests.security.sockets import connected_to, descendants

pytestmark = [pytest.mark.integration, pytest.mark.faults]

RUN_TIMEOUT = 150.0
"""A minute's run that lost a service must end (fail) within this long, never hang."""


def _run_minute(settings: Settings, minute: Minute,
                extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "etar", "run-minute", "--minute", str(minute)],
                            env={**env_for(settings), **(extra_env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(run: subprocess.Popen[str]) -> tuple[int, str]:
    started = time.monotonic()
    out, err = run.communicate(timeout=RUN_TIMEOUT)
    assert "Traceback" not in err, err[-3000:]
    assert time.monotonic() - started < RUN_TIMEOUT
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    lines = errors or out.strip().splitlines() or [""]
    return run.returncode, lines[-1]


def _rerun(settings: Settings, minute: Minute) -> int:
    code, last = _finish(_run_minute(settings, minute))
    assert code == 0, last
    return int(read_report(minute, settings)["total_events"])


def _kill_during_run(settings: Settings, row: FaultRow, service: str, port: int,
                     count: int, seed: int, extra_env: dict[str, str] | None = None) -> None:
    minute = ingested_minute(settings, count, seed)
    dlq = dead_letter_offsets(settings)
    run = _run_minute(settings, minute, extra_env)
    wait_until(lambda: connected_to(run.pid, port) or run.poll() is not None, 120,
               f"the run to reach {service}")
    old = kill(settings, service)
    killed = time.monotonic()
    code, last = _finish(run)
    row.note = f"run during the kill: exit {code}: {last[:120]}"
    wait_restarted(settings, service, old)
    report_total = None
    try:
        report_total = _rerun(settings, minute)
        row.recover_s = time.monotonic() - killed
    finally:
        reconcile(row, settings, minute, count, report_total, dlq)
    assert_reconciled(row)


def test_s3_killed_during_extract(stack_settings: Settings, fault_row: FaultRow,
                                  scale: tuple[int, float]) -> None:
    _kill_during_run(stack_settings, fault_row, "s3", stack_settings.clickhouse_port,
                     scale[0] * 3, seed=1301)


def test_spark_connect_killed_during_analysis(stack_settings: Settings, fault_row: FaultRow,
                                              scale: tuple[int, float]) -> None:
    _kill_during_run(stack_settings, fault_row, "spark-connect",
                     stack_settings.spark_connect_port, scale[0], seed=1302,
                     extra_env={"ETAR_SPARK_MODE": "connect"})


def test_spark_submit_killed_during_analysis(stack_settings: Settings, fault_row: FaultRow,
                                             scale: tuple[int, float]) -> None:
    """The submit mode: the job's JVM (a child of the run) dies; the run says so, exit 1."""
    settings = stack_settings
    minute = ingested_minute(settings, scale[0], seed=1303)
    dlq = dead_letter_offsets(settings)
    run = _run_minute(settings, minute, {"ETAR_SPARK_MODE": "submit"})

    def job_pids() -> list[int]:
        return [pid for pid in descendants([run.pid]) - {run.pid}
                if _comm(pid) == "java"]

    wait_until(lambda: bool(job_pids()) or run.poll() is not None, 120, "spark-submit")
    time.sleep(3)  # the JVM is up and reading the minute
    killed = time.monotonic()
    for pid in job_pids():
        os.kill(pid, signal.SIGKILL)
    code, last = _finish(run)
    fault_row.note = f"run during the kill: exit {code}: {last[:120]}"
    assert code != 0 and "Spark job failed" in last
    report_total = None
    try:
        report_total = _rerun(settings, minute)
        fault_row.recover_s = time.monotonic() - killed
    finally:
        reconcile(fault_row, settings, minute, scale[0], report_total, dlq)
    assert_reconciled(fault_row)


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return ""

"""Run Airflow code in a child process configured exactly as the native stack's components."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from etar.config import Settings
from etar.minute import Minute
from etar_stack.services.airflow import airflow_env
from tests.integration.lanes import env_for

DAG_TEST = """
import json, sys
from datetime import datetime
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
run = bag.dags["etar_pipeline"].test(logical_date=datetime.fromisoformat(sys.argv[2]),
                                     mark_success_pattern=sys.argv[3] or None)
states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
print("RESULT " + json.dumps({"state": str(run.state), "tasks": states,
                             "interval": [run.data_interval_start.isoformat(),
                                          run.data_interval_end.isoformat()]}))
"""


def env(settings: Settings) -> dict[str, str]:
    """The environment of an Airflow component working on ``settings`` (e.g. a lane)."""
    return {**env_for(settings), **settings.environ("pipeline_lateness_seconds"),
            **airflow_env(settings)}


def run_python(code: str, settings: Settings, *args: str,
               timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], env=env(settings),
                          capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=str(settings.project_dir))


def run_cli(settings: Settings, *args: str,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "airflow", *args], env=env(settings),
                          capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=str(settings.project_dir))


def dag_test(settings: Settings, logical_date: str, mark_success: str = "") -> dict[str, Any]:
    """``etar_pipeline.test(logical_date=…)``: the run's state, task states and interval
    (and the run's log as ``output``); tasks matching ``mark_success`` are not run."""
    result = run_python(DAG_TEST, settings, str(settings.dags_folder), logical_date,
                        mark_success)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, (result.stdout + result.stderr)[-5000:]
    found: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    found["output"] = result.stdout + result.stderr
    return found




@dataclass
class FailedReplay:
    """A replay DAG run of an empty minute, run by the stack's scheduler and Celery worker."""

    minute: Minute
    run_id: str
    states: dict[str, str | None]
    link: str | None
    """The extract task's "Executed notebook" link."""


def replay_empty_minute(settings: Settings) -> FailedReplay:
    """Trigger the replay DAG for a closed minute without events (03_extract fails in its
    row check) and wait for the run to end (bounded: 5 minutes)."""
    from etar.orchestration.airflow_api import REPLAY_DAG, AirflowApi
    from tests.integration.lanes import wait_for
    from tests.notebooks.conftest import empty_minute

    minute = empty_minute(settings)
    with AirflowApi(settings) as api:
        api.set_paused(REPLAY_DAG, False)
        run_id = api.trigger(REPLAY_DAG, conf={"minute": str(minute)})["dag_run_id"]
        wait_for(lambda: api.run(REPLAY_DAG, run_id)["state"] in ("success", "failed"), 300,
                 "the replay run")
        states = api.task_states(REPLAY_DAG, run_id)
        link = api.extra_links(REPLAY_DAG, run_id, "extract").get("Executed notebook")
    return FailedReplay(minute, run_id, states, link)

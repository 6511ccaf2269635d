"""# etar_notebook_replay

Replays one minute through the workbook: notebooks `03_extract` → `04_analyze` → `05_report`
executed by papermill with `minute` as their parameter. Trigger it with the minute in the run
conf: `{"minute": "2026-01-01T10:30"}` (UTC; it must be closed).

1. `minute` — parses the conf's minute (a malformed or not-yet-closed minute fails here,
   before any notebook runs) and prepares the run's folder.
2. `extract`, `analyze`, `report` — one papermill run per notebook; each executed
   notebook (code, parameters, logs, charts) is kept next to Airflow's logs under
   `<state>/airflow/runs/<YYYY-MM-DD_HH-MM>/` and rendered to HTML there, failed or not.
   The task's **Executed notebook** link (and the dashboard, per minute) opens that HTML,
   served by the dashboard API at `/notebooks/<YYYY-MM-DD_HH-MM>/<notebook>`.

The same as `etar replay --minute …`; this file only wires `etar`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.papermill.operators.papermill import PapermillOperator
from airflow.sdk import BaseOperatorLink, dag, task

from etar.config import get_settings
from etar.orchestration.replay import KERNEL, STAGES, execute, notebooks_dir

SETTINGS = get_settings()
RUNS = SETTINGS.notebook_runs_dir
STEM = "{{ ti.xcom_pull(task_ids='minute', key='stem') }}"
MINUTE = "{{ ti.xcom_pull(task_ids='minute', key='minute') }}"


def notebook_url(output_nb: str) -> str:
    """Where the dashboard API serves the HTML of the executed notebook ``output_nb``."""
    path = Path(output_nb)
    return f"{SETTINGS.dashboard_links_url}/notebooks/{path.parent.name}/{path.stem}"


class ExecutedNotebookLink(BaseOperatorLink):
    """The task instance's link to its executed notebook, rendered as HTML (pushed to XCom
    when the task ends, failed or not; the UI reads it from there)."""

    name = "Executed notebook"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return notebook_url(str(operator.output_nb))


class ExecutedNotebookOperator(PapermillOperator):
    """Runs a notebook as ``etar.orchestration.replay.execute`` does (papermill with the code
    shown, then rendered to HTML, failed or not); a failure names the notebook and cell."""

    operator_extra_links = (ExecutedNotebookLink(),)

    def execute(self, context: Any) -> None:
        execute(Path(str(self.input_nb)), Path(str(self.output_nb)), dict(self.parameters or {}))


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=20),
    doc_md=__doc__,
    tags=["etar", "workbook"],
)
def etar_notebook_replay() -> None:
    @task(multiple_outputs=True)
    def minute(dag_run: Any = None) -> dict[str, str]:
        from etar.minute import Minute

        conf = (dag_run.conf if dag_run is not None else None) or {}
        parsed = Minute.parse(str(conf.get("minute", "")))
        (RUNS / parsed.stem).mkdir(parents=True, exist_ok=True)
        return {"minute": str(parsed), "stem": parsed.stem}

    previous: Any = minute()
    for name in STAGES:
        stage = ExecutedNotebookOperator(
            task_id=name.split("_", 1)[1].removesuffix(".ipynb"),
            input_nb=str(notebooks_dir(SETTINGS) / name),
            output_nb=f"{RUNS}/{STEM}/{name}",
            parameters={"minute": MINUTE},
            kernel_name=KERNEL,
            execution_timeout=timedelta(minutes=10),
        )
        previous >> stage
        previous = stage


etar_notebook_replay()

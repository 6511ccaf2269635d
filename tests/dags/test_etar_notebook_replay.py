"""The notebook replay DAG: its shape, and a bad minute failing before any notebook runs."""

from __future__ import annotations

import json

import httpx
import pytest

from etar.config import Settings
from etar.orchestration.replay import STAGES
from etar.warehouse import table as warehouse
from tests import REPO_ROOT
from tests.dags.airflow_runner import replay_empty_minute, run_python

pytestmark = pytest.mark.integration

SHAPE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags["etar_notebook_replay"]
tasks = {t.task_id: {"type": type(t).__name__, "down": sorted(t.downstream_task_ids)}
         for t in dag.tasks}
out = {t.task_id: t.output_nb for t in dag.tasks if hasattr(t, "output_nb")}
links = {t.task_id: sorted(l.name for l in t.operator_extra_links) for t in dag.tasks}
print("RESULT " + json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()},
                             "schedule": type(dag.timetable).__name__, "tasks": tasks,
                             "outputs": {k: str(getattr(v, "url", v)) for k, v in out.items()},
                             "links": links}))
"""

BAD_CONF = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder=sys.argv[1]).dags["etar_notebook_replay"]
run = dag.test(run_conf={"minute": sys.argv[2]})
print("RESULT " + json.dumps({ti.task_id: str(ti.state) for ti in run.get_task_instances()}))
"""


def _result(stdout: str) -> dict[str, object]:
    line = next(x for x in stdout.splitlines() if x.startswith("RESULT "))
    loaded: dict[str, object] = json.loads(line[len("RESULT "):])
    return loaded


def test_the_replay_dag_parses_with_its_shape(stack_settings: Settings) -> None:
    settings = stack_settings.model_copy(update={"project_dir": REPO_ROOT})
    result = run_python(SHAPE, settings, str(REPO_ROOT / "dags"), timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    shape = _result(result.stdout)
    assert shape["errors"] == {}
    assert shape["schedule"] == "NullTimetable"  # schedule=None
    tasks = shape["tasks"]
    assert tasks == {
        "minute": {"type": "_PythonDecoratedOperator", "down": ["extract"]},
        "extract": {"type": "ExecutedNotebookOperator", "down": ["analyze"]},
        "analyze": {"type": "ExecutedNotebookOperator", "down": ["report"]},
        "report": {"type": "ExecutedNotebookOperator", "down": []}}
    assert shape["links"] == {"minute": [], "extract": ["Executed notebook"],
                              "analyze": ["Executed notebook"], "report": ["Executed notebook"]}
    runs = str(stack_settings.state_dir / "airflow" / "runs")
    assert all(str(url).startswith(runs) for url in shape["outputs"].values())  # type: ignore[union-attr]


def test_a_malformed_minute_fails_the_first_task_only(stack_settings: Settings) -> None:
    settings = stack_settings.model_copy(update={"project_dir": REPO_ROOT})
    result = run_python(BAD_CONF, settings, str(REPO_ROOT / "dags"), "not-a-minute",
                        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    states = _result(result.stdout)
    assert states["minute"] == "failed"
    assert all(states.get(t) in (None, "upstream_failed") for t in ("extract", "analyze",
                                                                    "report"))
    assert "is not a minute" in result.stdout + result.stderr


def test_a_triggered_replay_on_the_celery_worker_equals_run_minute(
        stack_settings: Settings) -> None:
    """The replay DAG run by the stack's scheduler and Celery worker, end to end."""
    from etar.orchestration.airflow_api import REPLAY_DAG, AirflowApi
    from etar.orchestration.pipeline import run_minute
    from etar.report.minute_report import read_report
    from tests.integration.lanes import produce, wait_for
    from tests.notebooks.conftest import empty_minute

    minute = empty_minute(stack_settings)
    produce(stack_settings, 300, minute, seed=73)
    wait_for(lambda: warehouse.count_minute(minute, settings=stack_settings) == 300, 90,
             "ingestion")
    run_minute(minute, stack_settings)
    expected = read_report(minute, stack_settings)
    with AirflowApi(stack_settings) as api:
        api.set_paused(REPLAY_DAG, False)
        run = api.trigger(REPLAY_DAG, conf={"minute": str(minute)})

        def finished() -> bool:
            return api.run(REPLAY_DAG, run["dag_run_id"])["state"] in ("success", "failed")

        wait_for(finished, 600, "the replay run")
        states = api.task_states(REPLAY_DAG, run["dag_run_id"])
        links = {task: api.extra_links(REPLAY_DAG, run["dag_run_id"], task)
                 for task in ("extract", "analyze", "report")}
    assert states == {"minute": "success", "extract": "success", "analyze": "success",
                      "report": "success"}, states
    replayed = read_report(minute, stack_settings)
    for report in (expected, replayed):
        report.pop("generated_at")
    assert replayed == expected and replayed["total_events"] == 300
    kept = stack_settings.state_dir / "airflow" / "runs" / minute.stem
    assert sorted(p.name for p in kept.glob("*.ipynb")) == [
        "03_extract.ipynb", "04_analyze.ipynb", "05_report.ipynb"]
    # Each task links its executed notebook's HTML, served by the dashboard API.
    api_url = stack_settings.dashboard_api_url
    for task, name in zip(("extract", "analyze", "report"), STAGES, strict=True):
        url = f"{api_url}/notebooks/{minute.stem}/{name.removesuffix('.ipynb')}"
        assert links[task] == {"Executed notebook": url}
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200 and "<html" in page.text
    listed = httpx.get(f"{api_url}/notebooks/{minute.stem}", timeout=30).json()
    assert [(n["notebook"], n["status"]) for n in listed] == [
        ("03_extract", "succeeded"), ("04_analyze", "succeeded"), ("05_report", "succeeded")]


def test_a_failing_notebook_is_linked_with_its_cell(stack_settings: Settings) -> None:
    """An empty minute fails 03_extract in its row check: the task still links the executed
    notebook, whose summary and HTML name the failing cell."""
    failed = replay_empty_minute(stack_settings)
    assert failed.states == {"minute": "success", "extract": "failed",
                             "analyze": "upstream_failed", "report": "upstream_failed"}
    assert failed.link == (f"{stack_settings.dashboard_api_url}/notebooks/"
                           f"{failed.minute.stem}/03_extract")
    listed = httpx.get(f"{stack_settings.dashboard_api_url}/notebooks/{failed.minute.stem}",
                       timeout=30).json()
    assert len(listed) == 1 and listed[0]["status"] == "failed", listed
    assert listed[0]["notebook"] == "03_extract" and listed[0]["cell"] >= 1
    assert "has no events" in listed[0]["error"]
    page = httpx.get(failed.link, timeout=30).text
    assert "has no events" in page

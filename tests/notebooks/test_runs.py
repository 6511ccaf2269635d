"""Notebooks run by papermill with other parameters, and `etar replay` against `etar run-minute`.

They work on the main topic and table of the running stack, in past minutes nobody else
writes to (``free_minute``), so the counts of a minute are exactly what the test produced.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import papermill
import pytest

from etar.config import Settings
from etar.events.event import Status
from etar.minute import Minute
from etar.orchestration.replay import STAGES, run_dir
from etar.produce.producer import ProduceOptions, produce
from etar.report.minute_report import read_report
from etar.warehouse import table as warehouse
from etar.workbook import records, wait_for_rows
from tests.integration.lanes import expected_events
from tests.notebooks.conftest import NOTEBOOKS, empty_minute, etar, notebook

pytestmark = pytest.mark.integration


def test_produce_notebook_with_another_rate_and_error_rate(stack_settings: Settings,
                                                          tmp_path: Path) -> None:
    minute = empty_minute(stack_settings)
    output = tmp_path / "01_produce.ipynb"
    papermill.execute_notebook(str(notebook("01_produce.ipynb")), str(output), parameters={
        "rate": 300.0, "duration": 3.0, "error_rate": 0.5, "minute": str(minute),
        "decode": 3}, kernel_name="python3", progress_bar=False, cwd=str(NOTEBOOKS))
    values = records(output)
    assert values["minute"] == str(minute)
    assert 600 <= values["delivered"] <= 300 * 3 * 1.1 + 1 and values["failed"] == 0
    assert values["events_per_s"] <= 300 * 1.15
    assert values["stored"] == values["delivered"] == warehouse.count_minute(
        minute, settings=stack_settings)
    assert 0.4 <= values["error_share"] <= 0.6
    # the notebook keeps its charts: the throughput and per-type figures are in the outputs
    text = output.read_text()
    assert text.count("application/vnd.plotly.v1+json") >= 2


def _report_body(report: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in report.items() if k not in ("generated_at",)}


def test_replay_of_a_produced_minute_equals_run_minute(stack_settings: Settings) -> None:
    minute: Minute = empty_minute(stack_settings)
    count, seed = 400, 4242
    produce(ProduceOptions(count=count, seed=seed, minute=minute), stack_settings)
    wait_for_rows(minute, count, stack_settings)
    events = expected_events(count, minute, seed)
    errors = sum(e.status == Status.ERROR for e in events)
    per_type = Counter((e.event_type.value, e.status.value) for e in events)

    replayed = etar("replay", "--minute", str(minute))
    assert replayed.returncode == 0, replayed.stderr[-3000:]
    folder = run_dir(minute, stack_settings.model_copy(update={
        "project_dir": NOTEBOOKS.parent}))
    for name in STAGES:
        assert str(folder / name) in replayed.stdout
        assert (folder / name).exists()
    extract, analyze, report = (records(folder / name) for name in STAGES)
    assert extract["rows"] == count and extract["same"] is True
    assert extract["parquet"] == minute.parquet_name
    assert analyze["total_events"] == count and analyze["total_errors"] == errors
    assert analyze["equal"] is True
    replay_report = report["report"]
    assert replay_report["total_events"] == count and replay_report["total_errors"] == errors
    for kind, counts in replay_report["by_event_type"].items():
        assert counts == {"success": per_type[(kind, "SUCCESS")],
                          "error": per_type[(kind, "ERROR")]}
    line = replayed.stdout.strip().splitlines()[-1]
    assert json.loads(line.split("report=", 1)[1]) == replay_report

    ran = etar("run-minute", "--minute", str(minute))
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert _report_body(read_report(minute, stack_settings)) == _report_body(replay_report)

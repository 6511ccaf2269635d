"""Notebooks 03 to 05 with their defaults never change a live minute.

A minute of the main topic is produced, extracted, analysed and reported the way the pipeline
does it; then the three notebooks run with their defaults (papermill) and every minute the
dashboard had a report of keeps its report, its ``FINAL`` count and its objects in the bucket.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import papermill
import pytest

from etar import workbook
from etar.config import Settings
from etar.extract import storage
from etar.minute import Minute
from etar.orchestration.pipeline import run_minute
from etar.produce.producer import ProduceOptions, produce
from etar.report.minute_report import fetch
from etar.warehouse import table as warehouse
from tests.notebooks.conftest import NOTEBOOKS, empty_minute, notebook

pytestmark = pytest.mark.integration


def _live_state(settings: Settings) -> dict[str, Any]:
    """Every reported minute's report and FINAL count, and the bucket's objects (etags)."""
    _, history = fetch(settings)
    reports = {Minute.parse(r["minute"], closed=False): r for r in history}
    objects = {o.object_name: o.etag for o in storage.client(settings).list_objects(
        settings.s3_bucket, recursive=True)}
    return {"reports": reports, "objects": objects,
            "counts": warehouse.count_minutes(list(reports), settings=settings)}


def test_defaults_of_03_to_05_leave_every_reported_minute_as_it_was(
        stack_settings: Settings, tmp_path: Path) -> None:
    minute = empty_minute(stack_settings)
    produce(ProduceOptions(count=250, minute=minute), stack_settings)
    workbook.wait_for_rows(minute, 250, stack_settings)
    assert run_minute(minute, stack_settings).posted is not None
    before = _live_state(stack_settings)
    assert before["counts"][minute] == 250 and minute.json_name in before["objects"]
    default = workbook.latest_reported_minute(stack_settings)
    assert default is not None and default >= minute

    values = {}
    for name in ("03_extract.ipynb", "04_analyze.ipynb", "05_report.ipynb"):
        output = tmp_path / name
        papermill.execute_notebook(str(notebook(name)), str(output), kernel_name="python3",
                                   progress_bar=False, cwd=str(NOTEBOOKS))
        values[name] = workbook.records(output)
        assert "SANDBOX" in output.read_text()  # the run says where it wrote

    after = _live_state(stack_settings)
    for reported, report in before["reports"].items():
        assert after["reports"].get(reported) == report, f"the report of {reported} changed"
        assert after["counts"].get(reported) == before["counts"].get(reported), reported
    changed = {k for k, etag in before["objects"].items() if after["objects"].get(k) != etag}
    assert changed == set(), f"the notebooks rewrote live objects: {sorted(changed)}"
    sandbox = workbook.sandbox_settings(stack_settings).s3_bucket
    for name, recorded in values.items():
        assert recorded["minute"] == str(default), name  # the latest reported minute
        assert recorded["live"] is False and recorded["bucket"] == sandbox, name
    assert values["03_extract.ipynb"]["rows"] == before["counts"][default]
    assert values["05_report.ipynb"]["posted"] is False
    assert values["05_report.ipynb"]["report"]["total_events"] == before["counts"][default]

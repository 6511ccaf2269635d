"""Each extra of etar installs into a fresh venv (at the lock's versions) and brings what it
promises for the place it runs, and nothing of the other places or of the embedded stack."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import REPO_ROOT
from tests.packaging.venvs import run_in

PROMISED = {
    "spark": ["pyspark.sql", "pyspark.sql.connect.session", "etar.analysis.aggregation",
              "etar.analysis.job", "etar.analysis.remote", "etar.analysis.submit"],
    "airflow": ["airflow.sdk", "airflow.providers.apache.spark.operators.spark_submit",
                "airflow.providers.papermill.operators.papermill",
                "airflow.providers.celery.executors.celery_executor", "papermill",
                "ipykernel", "plotly", "pyspark.sql", "etar.orchestration.replay",
                "etar.report.charts"],
    "dashboard": ["fastapi", "uvicorn", "streamlit", "plotly", "etar.report.view",
                  "etar.report.charts", "etar.report.minute_report"],
    "workbook": ["jupyterlab", "papermill", "ipykernel", "plotly", "pyspark.sql",
                 "etar.workbook", "etar.orchestration.replay", "etar.report.charts"],
}
"""What each extra promises: modules that import in its venv."""

ABSENT = {
    "spark": ["airflow", "streamlit", "jupyterlab", "papermill", "chdb", "etar_stack"],
    "airflow": ["streamlit", "jupyterlab", "chdb", "mirakuru", "etar_stack"],
    "dashboard": ["airflow", "jupyterlab", "pyspark", "chdb", "mirakuru", "etar_stack"],
    "workbook": ["airflow", "streamlit", "chdb", "mirakuru", "etar_stack"],
}
"""What each extra must not bring (another place's engine or UI, the stack's servers)."""

CHECK = """
import importlib, importlib.metadata as m, importlib.util, json, sys
promised, absent = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name in promised:
    importlib.import_module(name)
def version(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return None
print(json.dumps({"present": [n for n in absent if importlib.util.find_spec(n) is not None],
                  "pyspark": version("pyspark"), "pyspark-client": version("pyspark-client")}))
"""


def _locked(name: str) -> str:
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    return next(p["version"] for p in lock["package"] if p["name"] == name)


def test_every_extra_is_checked() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert set(pyproject["project"]["optional-dependencies"]) == set(PROMISED) == set(ABSENT)


@pytest.mark.parametrize("extra", sorted(PROMISED))
def test_the_extra_installs_and_imports_what_it_promises(
        venv_with: Callable[..., Path], tmp_path: Path, extra: str) -> None:
    venv = venv_with(extra)
    result = run_in(venv, "python", "-c", CHECK, json.dumps(PROMISED[extra]),
                    json.dumps(ABSENT[extra]), cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["present"] == [], f"etar[{extra}] brought {found['present']}"
    if "pyspark.sql" in PROMISED[extra]:
        # the full pyspark (spark-submit and its jars) at the lock's version, never the Spark
        # provider's pyspark-client in the same folder
        assert found["pyspark"] == _locked("pyspark") and found["pyspark-client"] is None
        assert list((venv / "bin").glob("spark-submit"))

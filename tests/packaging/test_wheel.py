"""etar installed as a plain wheel (as the Airflow and etar images install it), without the
embedded stack: package data, not source-tree paths; a light base install; `etar stack`
naming the distribution it needs."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

from tests import REPO_ROOT
from tests.packaging.venvs import run_in

SCRIPT = """
import json, sys
import etar
from etar.events.event import parsed_schema
from etar.warehouse.table import table_ddl
from etar.analysis.submit import submit_spec
from etar.config import Settings
schema = parsed_schema()
ddl = table_ddl()
spec = submit_spec("s3a://etar/2026-01-01_10-30.parquet", Settings(spark_jars_dir=sys.argv[1]))
print(json.dumps({"package": etar.__file__, "schema": schema["name"], "ddl": ddl[:80],
                  "command": spec.command()}))
"""

HEAVY = ("pyspark", "airflow", "chdb", "streamlit", "jupyterlab", "papermill", "plotly",
         "fastapi", "uvicorn", "mirakuru", "etar_stack")
"""What the base install must not bring: engines, servers, UIs, the embedded stack."""


def test_the_etar_wheel_holds_the_pipeline_and_the_stack_wheel_the_stack(
        wheels: dict[str, Path]) -> None:
    with zipfile.ZipFile(wheels["etar"]) as etar:
        names = etar.namelist()
    assert not [n for n in names if n.startswith("etar_stack")]
    for data in ("etar/analysis/job.py", "etar/resources/user_event_schema.avsc",
                 "etar/resources/clickhouse_table_schema.sql",
                 "etar/resources/spark-log4j2.properties"):
        assert data in names
    with zipfile.ZipFile(wheels["etar-stack"]) as stack:
        names = stack.namelist()
        (points,) = [n for n in names if n.endswith("entry_points.txt")]
        (metadata,) = [n for n in names if n.endswith("METADATA")]
        entry_points, requires = stack.read(points).decode(), stack.read(metadata).decode()
    assert all(n.startswith(("etar_stack/", "etar_stack-")) for n in names), names
    assert "etar_stack/poms/kafka.xml" in names
    assert "[etar.cli]\nstack = etar_stack.cli:register" in entry_points
    assert "Requires-Dist: etar[airflow,dashboard,spark,workbook]" in requires


def test_the_base_install_is_light_and_its_cli_runs_outside_the_checkout(
        venv_with: Callable[..., Path], tmp_path: Path) -> None:
    venv = venv_with()
    found = run_in(venv, "python", "-c", "import importlib.util, json\n"
                   f"print(json.dumps([n for n in {HEAVY!r} "
                   "if importlib.util.find_spec(n) is not None]))", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == []
    result = run_in(venv, "etar", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "stack" in result.stdout and "run-minute" in result.stdout
    assert "needs etar-stack" in result.stdout


def test_without_the_stack_etar_stack_says_how_to_install_it(
        venv_with: Callable[..., Path], tmp_path: Path) -> None:
    for command in (["stack", "up", "--detach"], ["stack", "--help"], ["up"], ["demo"]):
        result = run_in(venv_with(), "etar", *command, cwd=tmp_path)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        error = " ".join(result.stderr.split())
        assert f"`etar {command[0]}` needs the embedded stack" in error, error
        assert "pip install etar-stack" in error and "Traceback" not in result.stderr


def test_schema_sql_and_submit_spec_come_from_the_installed_package(
        venv_with: Callable[..., Path], tmp_path: Path) -> None:
    venv = venv_with("spark")
    jars = tmp_path / "jars"
    jars.mkdir()
    (jars / "hadoop-aws-3.5.0.jar").write_bytes(b"")
    result = run_in(venv, "python", "-c", SCRIPT, str(jars), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["package"].startswith(str(venv)), found["package"]
    assert not found["package"].startswith(str(REPO_ROOT))
    assert found["schema"] == "dev.etar.events.UserInteraction"
    assert found["ddl"].startswith("CREATE TABLE IF NOT EXISTS `user_interactions`")
    job = found["command"][-2]
    assert job.startswith(str(venv)) and job.endswith("etar/analysis/job.py")
    assert Path(job).is_file()
    log4j = next(c for c in found["command"] if "log4j2.configurationFile" in c)
    assert Path(log4j.rsplit("=", 1)[1]).is_file()

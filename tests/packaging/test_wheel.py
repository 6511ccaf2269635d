"""etar installed as a plain wheel (as the Airflow, Spark and etar images install it) runs
without the checkout: package data, not source-tree paths."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests import REPO_ROOT

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


def _uv() -> str:
    """The uv that runs the tests (``uv run`` names itself in ``UV``)."""
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.fail("uv not found: run the tests with `uv run pytest` (as `make test` does)")
    return uv


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([_uv(), "build", "--wheel", "--out-dir", str(out),
                    str(REPO_ROOT)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("etar-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv outside the checkout with the wheel installed, not editable.

    Its dependencies come from the locked environment's site-packages (a path entry, so the
    checkout's editable ``.pth`` is not read).
    """
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    purelib = next((root / "lib").glob("python3.*/site-packages"))
    (purelib / "locked_deps.pth").write_text(site.getsitepackages()[0] + "\n")
    subprocess.run([_uv(), "pip", "install", "--python",
                    str(root / "bin" / "python"), "--no-deps", str(wheel)],
                   check=True, capture_output=True, timeout=120)
    return root


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETAR_", "PYTHON"))}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def test_the_installed_cli_runs_outside_the_checkout(venv: Path, tmp_path: Path) -> None:
    result = _run(venv, str(venv / "bin" / "etar"), "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "stack" in result.stdout and "run-minute" in result.stdout


def test_schema_sql_and_submit_spec_come_from_the_installed_package(
        venv: Path, tmp_path: Path) -> None:
    import json

    jars = tmp_path / "jars"
    jars.mkdir()
    (jars / "hadoop-aws-3.5.0.jar").write_bytes(b"")
    result = _run(venv, str(venv / "bin" / "python"), "-c", SCRIPT, str(jars), cwd=tmp_path)
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

"""The pipeline from the installed wheel alone (etar[spark], no embedded stack, no checkout):
the DAG's extract task function and the Spark job (spark-submit, as the DAG's submit mode
runs it), against the stack's ClickHouse and S3."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from etar.config import Settings
from etar.warehouse import table as warehouse
from tests import REPO_ROOT
from tests.integration.lanes import produce, recent_minute, wait_for
from tests.packaging.venvs import clean_env, run_in

pytestmark = pytest.mark.integration

SCRIPT = """
import json, sys
from etar.extract import parquet as extract
from etar.extract import storage
from etar.minute import Minute
from etar.analysis.submit import analyze_minute
minute = Minute.parse(sys.argv[1])
parquet = extract.extract_minute(minute)  # the DAG's `extract` task
run = analyze_minute(minute)                   # `analyze` in submit mode: spark-submit the job
print(json.dumps({"module": extract.__file__, "parquet": parquet, "report": run.report,
                  "content": storage.read_json(run.report)}))
"""


def test_the_installed_wheel_extracts_a_minute_and_runs_the_spark_job(
        venv_with: Callable[..., Path], lane: Settings, lane_sink: subprocess.Popen[bytes],
        tmp_path: Path) -> None:
    venv = venv_with("spark")
    minute = recent_minute(5)
    produce(lane, 1_200, minute, seed=71)
    wait_for(lambda: warehouse.count_minute(minute, settings=lane) == 1_200, 60, "ingestion")
    env = clean_env(PATH=f"{venv / 'bin'}:{os.environ['PATH']}", **lane.environ(
        "clickhouse_host", "clickhouse_port", "clickhouse_user", "clickhouse_password",
        "clickhouse_database", "clickhouse_table", "s3_endpoint", "s3_access_key",
        "s3_secret_key", "s3_region", "s3_bucket", "spark_driver_memory"),
        ETAR_SPARK_MODE="submit", ETAR_SPARK_MASTER="local[1]",
        ETAR_SPARK_JARS_DIR=str(lane.s3a_jars_dir.resolve()),
        ETAR_STATE_DIR=str(tmp_path / "state"))
    result = run_in(venv, "python", "-c", SCRIPT, str(minute), cwd=tmp_path, env=env,
                    timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["module"].startswith(str(venv)) and not found["module"].startswith(
        str(REPO_ROOT))
    assert found["parquet"] == minute.parquet_name
    assert found["report"] == minute.json_name
    assert found["content"]["total_events"] == 1_200
    assert found["content"]["minute"] == minute.start.strftime("%Y-%m-%dT%H:%M:00Z")

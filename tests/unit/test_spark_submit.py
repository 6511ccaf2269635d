"""The submit spec: jars, S3A settings, and no secret on the command line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from etar.analysis import job as spark_job
from etar.analysis.submit import (
    EXIT_TIMEOUT,
    AnalysisFailed,
    require_s3a_jars,
    run_submit,
    submit_spec,
)
from etar.config import Settings
from etar.errors import ConfigError
from etar_stack import s3a_jars

SOURCE = "s3a://etar/2026-01-01_10-30.parquet"


@pytest.fixture
def baked(tmp_path: Path) -> Path:
    for name in ("hadoop-aws-3.5.0.jar", "bundle-2.35.4.jar"):
        (tmp_path / name).write_bytes(b"")
    return tmp_path


def test_secrets_travel_in_the_environment_only(baked: Path) -> None:
    settings = Settings(_env_file=None, spark_jars_dir=baked,
                        s3_secret_key=SecretStr("very-secret-value"))
    spec = submit_spec(SOURCE, settings)
    command = spec.command()
    assert not any("very-secret-value" in part for part in command)
    assert "very-secret-value" not in repr(spec)
    assert spec.env["AWS_SECRET_ACCESS_KEY"] == "very-secret-value"
    assert "spark.hadoop.fs.s3a.path.style.access=true" in command
    assert command[-2:] == [spark_job.__file__, SOURCE]
    assert spec.name == "etar-analyze-2026-01-01_10-30"


def test_jars_go_on_the_class_path_not_through_jars(baked: Path) -> None:
    spec = submit_spec(SOURCE, Settings(_env_file=None, spark_jars_dir=baked))
    assert "--jars" not in spec.command()
    assert spec.conf["spark.executor.extraClassPath"] == spec.conf["spark.driver.extraClassPath"]
    assert spec.conf["spark.driver.extraClassPath"] == f"{baked}/*"


def test_the_operator_gets_the_same_run(baked: Path) -> None:
    spec = submit_spec(SOURCE, Settings(_env_file=None, spark_jars_dir=baked))
    kwargs = spec.operator_kwargs()
    assert (kwargs["application"], kwargs["application_args"]) == (spec.application, [SOURCE])
    assert kwargs["conf"] == spec.conf and kwargs["env_vars"] == spec.env


def test_missing_jars_say_how_to_get_them(tmp_path: Path, baked: Path) -> None:
    with pytest.raises(ConfigError, match="etar stack install"):
        require_s3a_jars(Settings(_env_file=None, spark_jars_dir=tmp_path / "empty"))
    assert require_s3a_jars(Settings(_env_file=None, spark_jars_dir=baked))


def test_a_templated_source_needs_a_name(baked: Path) -> None:
    spec = submit_spec("{{ source }}", Settings(_env_file=None, spark_jars_dir=baked),
                       name="etar-analyze-{{ ds }}")
    assert spec.application_args == ["{{ source }}"] and spec.name == "etar-analyze-{{ ds }}"


def test_a_source_not_named_after_a_minute_is_refused(baked: Path) -> None:
    with pytest.raises(ConfigError, match="not named after a minute"):
        submit_spec("s3a://etar/x.parquet", Settings(_env_file=None, spark_jars_dir=baked))


def test_the_pinned_hadoop_matches_pyspark() -> None:
    assert s3a_jars.pom_hadoop_version() == s3a_jars.pyspark_hadoop_version()


def _fake_submit(tmp_path: Path, body: str) -> list[str]:
    """A stand-in for spark-submit: a shell script whose output and exit the test chooses."""
    script = tmp_path / "spark-submit"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return [str(script)]


def test_the_result_is_the_marked_line_not_the_last_one(tmp_path: Path) -> None:
    command = _fake_submit(tmp_path, f"""echo 'log line'
echo '{spark_job.RESULT_MARKER}{{"written": "s3a://b/x.json", "compute_s": 0.5}}'
echo 'INFO ShutdownHookManager: Deleting directory /tmp/spark-1'""")
    assert run_submit(command, {}, timeout=30) == {"written": "s3a://b/x.json",
                                                    "compute_s": 0.5}


def test_a_job_without_a_result_line_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(AnalysisFailed, match="without its result line") as failed:
        run_submit(_fake_submit(tmp_path, "echo '{\"written\": 1}'"), {}, timeout=30)
    assert failed.value.returncode == spark_job.EXIT_INTERNAL


def test_the_job_reason_is_kept_on_failure(tmp_path: Path) -> None:
    command = _fake_submit(tmp_path, "echo 'spark_job: s3a://b/x.parquet is not a minute of "
                                     "events' >&2; exit 5")
    with pytest.raises(AnalysisFailed, match="not a minute of events") as failed:
        run_submit(command, {}, timeout=30)
    assert failed.value.returncode == spark_job.EXIT_BAD_DATA


def test_a_hanging_submit_is_killed_with_its_children(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    command = _fake_submit(tmp_path, f"sleep 60 & echo $! > {marker}; wait")
    started = time.monotonic()
    with pytest.raises(AnalysisFailed, match="did not finish within 1s") as failed:
        run_submit(command, {}, timeout=1)
    assert time.monotonic() - started < 10
    assert failed.value.returncode == EXIT_TIMEOUT
    child = int(marker.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists() or \
        Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"


def test_bad_columns_names_each_problem() -> None:
    assert spark_job.bad_columns(dict(spark_job.REQUIRED_COLUMNS)) == []
    problems = spark_job.bad_columns({"event_type": "string", "status": "int"})
    assert "column 'status' is int, not string" in problems
    assert "column 'user_id' is missing" in problems

"""How spark-submit is called: jars, S3A settings, and no secret on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from etar.analyze import submit_command
from etar.config import Settings
from etar.native import spark


@pytest.fixture
def baked(tmp_path: Path) -> Path:
    for name in ("hadoop-aws-3.5.0.jar", "bundle-2.35.4.jar"):
        (tmp_path / name).write_bytes(b"")
    return tmp_path


def test_secrets_travel_in_the_environment_only(baked: Path) -> None:
    settings = Settings(_env_file=None, spark_jars_dir=baked,
                        s3_secret_key=SecretStr("very-secret-value"))
    command, env = submit_command("s3a://etar/2026-01-01_10-30.parquet", settings)
    assert not any("very-secret-value" in part for part in command)
    assert env["AWS_SECRET_ACCESS_KEY"] == "very-secret-value"
    assert "spark.hadoop.fs.s3a.path.style.access=true" in command
    assert command[-1] == "s3a://etar/2026-01-01_10-30.parquet"


def test_baked_jars_go_on_the_class_path_not_through_jars(baked: Path) -> None:
    command, _ = submit_command("s3a://etar/x.parquet",
                                Settings(_env_file=None, spark_jars_dir=baked))
    assert "--jars" not in command
    assert f"spark.executor.extraClassPath={baked}/*" in command


def test_the_pinned_hadoop_matches_pyspark() -> None:
    assert spark.pom_hadoop_version() == spark.pyspark_hadoop_version()

"""Run the Spark job on one extracted minute: ``spark-submit spark/spark.py s3a://…``.

The S3A jars are resolved before (``etar stack install``) and passed with ``--jars``; S3A
endpoint settings go in ``--conf``; credentials only in the job's environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from etar import storage, warehouse
from etar.config import PROJECT_ROOT, Settings, get_settings
from etar.errors import EtarError
from etar.native import spark

JOB = PROJECT_ROOT / "spark" / "spark.py"
ENV_CREDENTIALS = "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider"


class AnalysisFailed(EtarError):
    """The Spark job exited non-zero."""

    def __init__(self, returncode: int, message: str) -> None:
        super().__init__(f"the Spark job failed (exit {returncode}): {message}")
        self.returncode = returncode


@dataclass
class JobRun:
    """One finished job: the report's object name and where the time went."""

    report: str
    wall_s: float
    compute_s: float

    @property
    def startup_s(self) -> float:
        return self.wall_s - self.compute_s


def submit_command(source: str, settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The spark-submit command line and environment for ``source`` (an s3a:// URL)."""
    jars = spark.install(settings)
    endpoint = urlsplit(settings.s3_endpoint)
    conf = {
        "spark.hadoop.fs.s3a.endpoint": settings.s3_endpoint,
        "spark.hadoop.fs.s3a.endpoint.region": settings.s3_region,
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": str(endpoint.scheme == "https").lower(),
        "spark.hadoop.fs.s3a.aws.credentials.provider": ENV_CREDENTIALS,
        "spark.hadoop.fs.s3a.attempts.maximum": "3",
        "spark.hadoop.fs.s3a.retry.limit": "3",
        "spark.ui.enabled": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.extraJavaOptions":
            f"-Dlog4j2.configurationFile={PROJECT_ROOT / 'spark' / 'log4j2.properties'}",
    }
    command = [str(spark.SPARK_HOME / "bin" / "spark-submit"), "--master", settings.spark_master,
               "--driver-memory", settings.spark_driver_memory]
    if settings.spark_jars_dir is not None:
        # Images bake the jars in on every node: put them on the class path instead of
        # shipping the 700 MB SDK bundle to the executors with each job.
        baked = f"{settings.spark_jars_dir}/*"
        conf["spark.driver.extraClassPath"] = conf["spark.executor.extraClassPath"] = baked
    else:
        command += ["--jars", ",".join(str(jar) for jar in jars)]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    command += [str(JOB), source]
    env = {**os.environ, "SPARK_HOME": str(spark.SPARK_HOME),
           "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "AWS_ACCESS_KEY_ID": settings.s3_access_key,
           "AWS_SECRET_ACCESS_KEY": settings.s3_secret_key.get_secret_value(),
           "AWS_REGION": settings.s3_region, "TZ": "UTC",
           "SPARK_LOCAL_IP": settings.bind_host}
    return command, env


def run_job(source: str, settings: Settings | None = None) -> JobRun:
    """Run the job on an s3a:// Parquet URL; AnalysisFailed with its reason on failure."""
    settings = settings or get_settings()
    command, env = submit_command(source, settings)
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        output = (result.stdout + "\n" + result.stderr).splitlines()
        reason = [line for line in output if line.startswith("spark.py:")]
        raise AnalysisFailed(result.returncode,
                             reason[-1] if reason else result.stderr.strip()[-2000:])
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    return JobRun(summary["written"].rsplit("/", 1)[-1], wall, summary["compute_s"])


def analyze_minute(minute: datetime | str, settings: Settings | None = None) -> JobRun:
    """Aggregate the minute's Parquet object into its JSON report (next to it)."""
    settings = settings or get_settings()
    name = storage.object_name(warehouse.to_minute(minute), "parquet")
    return run_job(storage.s3a_url(name, settings), settings)

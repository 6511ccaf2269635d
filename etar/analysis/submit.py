"""The Spark job's submit spec: one plain value for ``spark-submit``, Airflow and the tests.

:func:`submit_spec` says what to run (``etar/analysis/job.py`` on one ``s3a://`` object) and how
(master, S3A conf, the S3A jars on the class path, environment). ``etar analyze`` turns it into
a ``spark-submit`` command (:meth:`SubmitSpec.command`); the DAG hands the same value to
``SparkSubmitOperator`` (:meth:`SubmitSpec.operator_kwargs`). Credentials travel only in the
environment, never in ``--conf`` (which ends up in logs).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from etar import resources
from etar.analysis.job import EXIT_INTERNAL, RESULT_MARKER
from etar.config import Settings, get_settings
from etar.errors import ConfigError, EtarError
from etar.extract import storage
from etar.minute import Minute

SUBMIT_TIMEOUT_S = 600.0
"""Longest a ``spark-submit`` of one minute may take before it is killed (the DAG's analyze
task allows 5 minutes; the CLI and tests get a little more)."""
EXIT_TIMEOUT = 124
"""AnalysisFailed's code for a job killed at its timeout (as coreutils ``timeout`` says)."""
JOB = Path(__file__).with_name("job.py")
"""The job, shipped in the package (``spark/spark.py`` is the same under the seed name)."""
ENV_CREDENTIALS = "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider"


class AnalysisFailed(EtarError):
    """The Spark job exited non-zero."""

    def __init__(self, returncode: int, message: str) -> None:
        super().__init__(f"the Spark job failed (exit {returncode}): {message}")
        self.returncode = returncode


def spark_home() -> Path:
    """The pyspark distribution (``bin/spark-submit``, ``jars/``), found without importing it."""
    spec = find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise ConfigError("pyspark is not installed: install etar[spark] (in the checkout: "
                          "`make install`)")
    return Path(spec.origin).parent


@dataclass(frozen=True)
class SubmitSpec:
    """Everything ``spark-submit`` needs for one run of the job."""

    application: str
    application_args: list[str]
    name: str
    master: str
    driver_memory: str
    conf: dict[str, str]
    env: dict[str, str] = field(repr=False)
    """Process environment of the submit (holds the S3 credentials: never log it)."""

    def command(self) -> list[str]:
        """The ``spark-submit`` command line (no secret in it)."""
        command = [str(spark_home() / "bin" / "spark-submit"), "--master", self.master,
                   "--name", self.name, "--driver-memory", self.driver_memory]
        for key, value in self.conf.items():
            command += ["--conf", f"{key}={value}"]
        return [*command, self.application, *self.application_args]

    def operator_kwargs(self) -> dict[str, Any]:
        """Arguments of Airflow's ``SparkSubmitOperator`` for the same run.

        The master comes from the ``spark_default`` connection, which etar defines from the
        same setting (``ETAR_SPARK_MASTER``).
        """
        return {"application": self.application, "application_args": self.application_args,
                "name": self.name, "conf": self.conf, "driver_memory": self.driver_memory,
                "env_vars": self.env}


def require_s3a_jars(settings: Settings) -> list[Path]:
    """hadoop-aws and its AWS SDK (resolved by ``etar stack install`` or baked in an image)."""
    jars = sorted(settings.s3a_jars_dir.glob("*.jar"))
    if not any(jar.name.startswith("hadoop-aws-") for jar in jars):
        raise ConfigError(f"no hadoop-aws jar in {settings.s3a_jars_dir}: run `etar stack "
                          "install` (or set ETAR_SPARK_JARS_DIR to the folder that has them)")
    return jars


def submit_spec(source: str, settings: Settings | None = None,
                name: str | None = None) -> SubmitSpec:
    """The spec for aggregating ``source`` (``s3a://bucket/YYYY-MM-DD_HH-MM.parquet``).

    Builds a plain value without touching the disk or Spark, so a DAG file can call it at
    parse time; ``source`` and ``name`` may then be Airflow templates.
    """
    settings = settings or get_settings()
    if name is None:
        name = f"etar-analyze-{Minute.from_object_name(source).stem}"
    classpath = f"{settings.s3a_jars_dir}/*"
    endpoint = urlsplit(settings.s3_endpoint)
    conf = {
        "spark.hadoop.fs.s3a.endpoint": settings.s3_endpoint,
        "spark.hadoop.fs.s3a.endpoint.region": settings.s3_region,
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": str(endpoint.scheme == "https").lower(),
        "spark.hadoop.fs.s3a.aws.credentials.provider": ENV_CREDENTIALS,
        # The classic stream: hadoop-aws 3.5's default ("analytics") caches object metadata
        # across reads, so a long-lived server read a rewritten minute with a stale length.
        "spark.hadoop.fs.s3a.input.stream.type": "classic",
        "spark.hadoop.fs.s3a.attempts.maximum": "3",
        "spark.hadoop.fs.s3a.retry.limit": "3",
        "spark.ui.enabled": "false",
        "spark.sql.session.timeZone": "UTC",
        # The jars sit at the same path on every node (resolved here, baked into images), so
        # they go on the class path instead of shipping the SDK bundle with each job.
        "spark.driver.extraClassPath": classpath,
        "spark.executor.extraClassPath": classpath,
        "spark.driver.extraJavaOptions":
            f"-Dlog4j2.configurationFile={resources.path(resources.SPARK_LOG4J2)}",
    }
    env = {"SPARK_HOME": str(spark_home()),
           "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "AWS_ACCESS_KEY_ID": settings.s3_access_key,
           "AWS_SECRET_ACCESS_KEY": settings.s3_secret_key.get_secret_value(),
           "AWS_REGION": settings.s3_region, "TZ": "UTC",
           "SPARK_LOCAL_IP": settings.bind_host}
    return SubmitSpec(application=str(JOB), application_args=[source],
                      name=name, master=settings.spark_master,
                      driver_memory=settings.spark_driver_memory, conf=conf, env=env)


REMOTE_MARKERS = ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE")
"""Set in the environment by a Spark Connect client; they turn a later classic session (or a
child process's) into a Connect one that has no server to reach."""


def classic_environ() -> dict[str, str]:
    """This process's environment without the Spark Connect markers."""
    return {k: v for k, v in os.environ.items() if k not in REMOTE_MARKERS}


def minute_source(minute: Minute, settings: Settings | None = None) -> str:
    """The ``s3a://`` URL of the minute's Parquet object."""
    return storage.s3a_url(minute.parquet_name, settings)


@dataclass
class JobRun:
    """One finished job: the report's object name and where the time went."""

    report: str
    wall_s: float
    compute_s: float

    @property
    def startup_s(self) -> float:
        return self.wall_s - self.compute_s


def run_submit(command: list[str], env: dict[str, str],
               timeout: float = SUBMIT_TIMEOUT_S) -> dict[str, Any]:
    """Run a ``spark-submit`` command; the job's result (its marked stdout line).

    The submit runs in a process group of its own, so a timeout kills the JVM and the Python
    worker it started, not just the launcher. AnalysisFailed with the job's reason (its
    ``spark_job:`` line) on a non-zero exit, a timeout or a missing result line.
    """
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise AnalysisFailed(EXIT_TIMEOUT, f"spark-submit did not finish within "
                                               f"{timeout:.0f}s and was killed") from None
    if process.returncode != 0:
        output = (stdout + "\n" + stderr).splitlines()
        reason = [line for line in output if line.startswith("spark_job:")]
        if reason:
            message = reason[-1]
        elif process.returncode < 0:
            message = f"spark-submit was killed by {signal.Signals(-process.returncode).name}"
        else:
            message = (stdout + stderr).strip()[-2000:] or "no output"
        raise AnalysisFailed(process.returncode, message)
    results = [line for line in stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if not results:
        raise AnalysisFailed(EXIT_INTERNAL, "the job exited 0 without its result line "
                                            f"({RESULT_MARKER.strip()}); output: "
                                            f"{stdout.strip()[-500:]!r}")
    try:
        result: dict[str, Any] = json.loads(results[-1].removeprefix(RESULT_MARKER))
    except ValueError as exc:
        raise AnalysisFailed(EXIT_INTERNAL, f"the job's result line is not JSON: {exc}") from exc
    return result


def run_job(source: str, settings: Settings | None = None,
            timeout: float = SUBMIT_TIMEOUT_S) -> JobRun:
    """Run the job on an s3a:// Parquet URL; AnalysisFailed with its reason on failure."""
    settings = settings or get_settings()
    require_s3a_jars(settings)
    spec = submit_spec(source, settings)
    started = time.perf_counter()
    summary = run_submit(spec.command(), {**classic_environ(), **spec.env}, timeout)
    wall = time.perf_counter() - started
    return JobRun(str(summary["written"]).rsplit("/", 1)[-1], wall, float(summary["compute_s"]))


def analyze_minute(minute: Minute, settings: Settings | None = None) -> JobRun:
    """Aggregate the minute's Parquet object into its JSON report (next to it)."""
    return run_job(minute_source(minute, settings), settings)

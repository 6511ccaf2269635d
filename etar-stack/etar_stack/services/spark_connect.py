"""The warm Spark: pyspark's Spark Connect server, S3A configured like the job.

One JVM (``local[2]`` by default, ``ETAR_SPARK_MASTER``) started with the stack instead of
one per minute: the minute's analysis (``etar.analysis.remote``) is then a client call. It runs
``SparkConnectServer`` in the foreground through ``spark-submit`` (what
``sbin/start-connect-server.sh`` does, without daemonizing), with the S3A endpoint in its
conf and the credentials in its environment. Ready once a query answers; it is warmed by
touching S3A so the first minute does not pay for loading it.
"""

from __future__ import annotations

from etar.analysis.submit import spark_home, submit_spec
from etar.config import Settings
from etar.security import refuse_unauthenticated_bind
from etar_stack.supervisor import Service

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


def command(settings: Settings) -> list[str]:
    spec = submit_spec("s3a://warm-up/1970-01-01_00-00.parquet", settings,
                       name="etar-spark-connect")
    conf = {**spec.conf, "spark.connect.grpc.binding.address": settings.bind_host,
            "spark.connect.grpc.binding.port": str(settings.spark_connect_port)}
    command = [str(spark_home() / "bin" / "spark-submit"), "--class", SERVER_CLASS,
               "--name", spec.name, "--master", settings.spark_master,
               "--driver-memory", settings.spark_driver_memory]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    return [*command, "spark-internal"]


def ready(settings: Settings) -> bool:
    """The port listens, then a client session runs a query."""
    from pyspark.sql import SparkSession

    from etar.analysis.remote import server_listening

    if not server_listening(settings):
        return False

    spark = SparkSession.builder.remote(settings.spark_connect_url).create()
    try:
        return bool(spark.range(3).count() == 3)
    finally:
        spark.stop()


def warm_up(settings: Settings) -> None:
    """Load S3A once (a read of a missing object), so no minute pays for it."""
    from pyspark.errors.exceptions.connect import AnalysisException
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.remote(settings.spark_connect_url).create()
    try:
        spark.read.parquet(f"s3a://{settings.s3_bucket}/1970-01-01_00-00.parquet").count()
    except AnalysisException:
        pass  # PATH_NOT_FOUND is the expected answer
    finally:
        spark.stop()


def service(settings: Settings) -> Service:
    spec = submit_spec("s3a://warm-up/1970-01-01_00-00.parquet", settings)
    return Service(
        name="spark-connect",
        command=command(settings),
        port=settings.spark_connect_port,
        url=f"{settings.spark_connect_url} (master {settings.spark_master})",
        ready=lambda: ready(settings),
        prepare=lambda: refuse_unauthenticated_bind(settings, settings.bind_host,
                                                    "Spark Connect"),
        after_start=lambda: warm_up(settings),
        env=spec.env,
        start_timeout=180,
    )

"""The minute's analysis on the warm Spark Connect server: no JVM to start per minute.

The native stack runs pyspark's Spark Connect server with the job's S3A configuration
(``etar.native.services.spark_connect``); here a thin client sends it the same
``etar.analysis.aggregate`` over the minute's Parquet object and writes the same JSON report
the ``spark-submit`` job writes (``ETAR_SPARK_MODE`` picks the way; both give equal reports).
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import time
from urllib.parse import urlsplit

from etar import storage
from etar.analysis import aggregate, finish
from etar.config import Settings, get_settings
from etar.errors import ServiceUnavailable
from etar.minute import Minute
from etar.spark_job import EXIT_MISSING, EXIT_UNREADABLE
from etar.spark_submit import AnalysisFailed, JobRun, minute_source


def server_listening(settings: Settings, timeout: float = 1.0) -> bool:
    """The server's port accepts connections (a client would otherwise retry for minutes)."""
    host = urlsplit(settings.spark_connect_url.replace("sc://", "http://", 1)).hostname
    with contextlib.suppress(OSError), socket.create_connection(
            (host or "127.0.0.1", settings.spark_connect_port), timeout=timeout):
        return True
    return False


def require_server(settings: Settings) -> None:
    if not server_listening(settings):
        raise ServiceUnavailable(f"Spark Connect at {settings.spark_connect_url} is not "
                                 "listening; start the stack (`etar stack up --detach`) or set "
                                 "ETAR_SPARK_MODE=submit")


def analyze_minute(minute: Minute, settings: Settings | None = None) -> JobRun:
    """Aggregate the minute's Parquet object on the Connect server; its JSON report, next to it.

    Fails like the job: AnalysisFailed (code 2: no such object, 3: unreadable Parquet);
    ServiceUnavailable when the server cannot be reached.
    """
    from pyspark.errors.exceptions.connect import AnalysisException, SparkConnectGrpcException
    from pyspark.sql import SparkSession

    settings = settings or get_settings()
    source = minute_source(minute, settings)
    require_server(settings)
    started = time.perf_counter()
    try:
        spark = SparkSession.builder.remote(settings.spark_connect_url).create()
    except SparkConnectGrpcException as exc:
        raise ServiceUnavailable(f"Spark Connect at {settings.spark_connect_url} is "
                                 f"unreachable ({exc})") from exc
    session_s = time.perf_counter() - started
    try:
        report = finish(aggregate(spark.read.parquet(source), minute), source)
    except AnalysisException as exc:
        if exc.getCondition() == "PATH_NOT_FOUND":
            raise AnalysisFailed(EXIT_MISSING, f"no such object: {source}") from exc
        raise AnalysisFailed(EXIT_UNREADABLE, f"cannot read {source} as Parquet: {exc}") from exc
    except SparkConnectGrpcException as exc:
        raise AnalysisFailed(EXIT_UNREADABLE, f"cannot read {source} as Parquet: {exc}") from exc
    finally:
        spark.stop()  # releases this client's server-side session
    data = json.dumps(report, indent=2).encode()
    storage.upload(minute.json_name, io.BytesIO(data), "application/json", len(data), settings)
    wall = time.perf_counter() - started
    return JobRun(minute.json_name, wall, wall - session_s)

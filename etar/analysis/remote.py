"""The minute's analysis on the warm Spark Connect server: no JVM to start per minute.

The native stack runs pyspark's Spark Connect server with the job's S3A configuration
(``etar_stack.services.spark_connect``); here a thin client sends it the same
``etar.analysis.aggregation.aggregate`` over the minute's Parquet object and writes the same
JSON report the ``spark-submit`` job writes (``ETAR_SPARK_MODE`` picks the way; both give equal
reports).
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import time
from urllib.parse import urlsplit

from etar.analysis.aggregation import aggregate, finish
from etar.analysis.job import (
    EXIT_BAD_DATA,
    EXIT_INTERNAL,
    EXIT_MISSING,
    EXIT_UNREADABLE,
    bad_columns,
)
from etar.analysis.submit import AnalysisFailed, JobRun, minute_source
from etar.config import Settings, get_settings
from etar.errors import ServiceUnavailable
from etar.extract import storage
from etar.minute import Minute

RETRY_POLICY = {"max_retries": 10, "initial_backoff": 500, "backoff_multiplier": 2.0,
                "max_backoff": 10_000}
"""The client's retries on an unavailable server: about a minute in all (a restart of the
server), not pyspark's default of ten minutes and more, so a dead server fails the run."""


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


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _grpc_error() -> type[Exception]:
    import grpc

    return grpc.RpcError  # type: ignore[no-any-return]


def _server_gone(exc: BaseException) -> bool:
    """The server is unreachable or lost the session (killed, restarted), not a query error."""
    text = str(exc)
    code = getattr(exc, "code", None)
    if callable(code) and str(code()) == "StatusCode.UNAVAILABLE":
        return True
    return any(mark in text for mark in ("UNAVAILABLE", "failed to connect", "Connection refused",
                                         "SESSION_NOT_FOUND", "NO_ACTIVE_SESSION",
                                         "Socket closed", "Connection reset"))


def analyze_minute(minute: Minute, settings: Settings | None = None) -> JobRun:
    """Aggregate the minute's Parquet object on the Connect server; its JSON report, next to it.

    Fails like the job: AnalysisFailed (code 2: no such object, 3: unreadable Parquet, 5: bad
    data, 1: internal); ServiceUnavailable when the server cannot be reached or went away.
    """
    from pyspark.errors.exceptions.connect import AnalysisException, SparkConnectException
    from pyspark.sql import SparkSession
    from pyspark.sql.connect.client.retries import DefaultPolicy

    settings = settings or get_settings()
    source = minute_source(minute, settings)
    require_server(settings)
    started = time.perf_counter()
    try:
        spark = SparkSession.builder.remote(settings.spark_connect_url).create()
        spark.client.set_retry_policies([DefaultPolicy(**RETRY_POLICY)])  # type: ignore[arg-type]
    except SparkConnectException as exc:
        raise ServiceUnavailable(f"Spark Connect at {settings.spark_connect_url} is "
                                 f"unreachable ({exc})") from exc
    session_s = time.perf_counter() - started
    try:
        try:
            events = spark.read.parquet(source)
            schema = {f.name: f.dataType.simpleString() for f in events.schema}
        except AnalysisException as exc:
            if exc.getCondition() == "PATH_NOT_FOUND":
                raise AnalysisFailed(EXIT_MISSING, f"no such object: {source}") from exc
            raise AnalysisFailed(EXIT_UNREADABLE,
                                 f"cannot read {source} as Parquet: {_first(exc)}") from exc
        problems = bad_columns(schema)
        if problems:
            raise AnalysisFailed(EXIT_BAD_DATA, f"{source} is not a minute of events: "
                                                + "; ".join(problems))
        report = finish(aggregate(events, minute), source)
    except (SparkConnectException, _grpc_error()) as exc:
        if _server_gone(exc):
            raise ServiceUnavailable(f"Spark Connect at {settings.spark_connect_url} went away "
                                     f"during the analysis ({_first(exc)})") from exc
        if any(mark in str(exc) for mark in ("FAILED_READ_FILE", "ParquetDecodingException")):
            raise AnalysisFailed(EXIT_UNREADABLE,
                                 f"cannot read {source} as Parquet: {_first(exc)}") from exc
        raise AnalysisFailed(EXIT_INTERNAL, f"aggregating {source} failed: {_first(exc)}") from exc
    finally:
        with contextlib.suppress(Exception):  # a dead server has no session to release
            spark.stop()  # releases this client's server-side session
    data = json.dumps(report, indent=2).encode()
    storage.upload(minute.json_name, io.BytesIO(data), "application/json", len(data), settings)
    wall = time.perf_counter() - started
    return JobRun(minute.json_name, wall, wall - session_s)

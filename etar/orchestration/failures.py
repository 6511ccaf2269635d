"""What a failure means: which service or input, and whether trying again can help.

The CLI prints :func:`describe` as its one ``error:`` line; the Airflow DAG retries a
:func:`transient` failure and fails a permanent one at once, both with the same message.
"""

from __future__ import annotations

import json

from etar.analysis.mode import spark_mode
from etar.config import Settings, get_settings
from etar.errors import ConfigError, EtarError, ServiceUnavailable

PERMANENT_ANALYSIS_CODES = {3, 5}
"""AnalysisFailed codes that no retry fixes: unreadable Parquet, bad data."""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def _where(exc: BaseException, settings: Settings) -> str | None:
    module = type(exc).__module__.split(".")[0]
    return {
        "clickhouse_connect": f"ClickHouse at {settings.clickhouse_host}:"
                              f"{settings.clickhouse_port}",
        "minio": f"S3 at {settings.s3_endpoint}",
        "urllib3": f"S3 at {settings.s3_endpoint}",
        "confluent_kafka": f"Kafka at {settings.kafka_bootstrap_servers}",
        "httpx": "an HTTP service",
        "pyspark": f"Spark ({spark_mode(settings)} mode)",
        "grpc": f"Spark Connect at {settings.spark_connect_url}",
    }.get(module)


def describe(exc: BaseException, settings: Settings | None = None) -> str:
    """One line saying what failed, for any exception (etar's own say it themselves)."""
    if isinstance(exc, EtarError):
        return first_line(exc)
    if isinstance(exc, json.JSONDecodeError):
        return f"a document is not valid JSON ({exc})"
    where = _where(exc, settings or get_settings())
    if where is not None:
        return f"{where} failed: {first_line(exc)}"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {first_line(exc)}"
    return (f"unexpected {type(exc).__name__}: {first_line(exc)} "
            "(set ETAR_DEBUG=1 for the traceback)")


def transient(exc: BaseException) -> bool:
    """Whether trying again later may succeed (a service down or restarting), as opposed to
    bad input or a bug that fails the same way every time."""
    from etar.analysis.submit import AnalysisFailed
    from etar.report.minute_report import ReportRejected

    if isinstance(exc, ServiceUnavailable):
        return True
    if isinstance(exc, (ConfigError, json.JSONDecodeError)):
        return False
    if isinstance(exc, AnalysisFailed):
        return exc.returncode not in PERMANENT_ANALYSIS_CODES
    if isinstance(exc, ReportRejected):
        return exc.status_code >= 500
    module = type(exc).__module__.split(".")[0]
    if module == "clickhouse_connect":
        from clickhouse_connect.driver.exceptions import OperationalError

        return isinstance(exc, OperationalError)  # connection, not a query error
    if module == "minio":
        from minio.error import S3Error

        return not isinstance(exc, S3Error) or exc.code in ("SlowDown", "InternalError",
                                                             "ServiceUnavailable")
    return isinstance(exc, (OSError, TimeoutError)) or module in ("urllib3", "httpx", "grpc")

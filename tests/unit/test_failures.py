"""Which failures are worth retrying, and the one line each gets."""

from __future__ import annotations

import json

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from minio.error import S3Error

from etar.analysis.submit import AnalysisFailed
from etar.errors import ConfigError, ServiceUnavailable
from etar.orchestration.failures import describe, transient
from etar.report.minute_report import ReportRejected


def _s3_error(code: str) -> S3Error:
    return S3Error(None, code, "message", "resource", "request", "host")  # type: ignore[arg-type]


def _bad_json() -> json.JSONDecodeError:
    with pytest.raises(json.JSONDecodeError) as caught:
        json.loads("{")
    return caught.value


@pytest.mark.parametrize(("exc", "retry"), [
    (ServiceUnavailable("down"), True),
    (OperationalError("connection refused"), True),
    (DatabaseError("Code: 47. Unknown identifier"), False),
    (_s3_error("NoSuchBucket"), False),
    (_s3_error("SlowDown"), True),
    (ConnectionRefusedError(111, "refused"), True),
    (AnalysisFailed(4, "S3 unreachable"), True),
    (AnalysisFailed(5, "not a minute of events"), False),
    (AnalysisFailed(3, "not Parquet"), False),
    (ReportRejected(422, "totals differ"), False),
    (ReportRejected(503, "busy"), True),
    (ConfigError("bad minute"), False),
    (_bad_json(), False),
])
def test_transient_or_not(exc: Exception, retry: bool) -> None:
    assert transient(exc) is retry


def test_every_failure_is_one_line_naming_the_service() -> None:
    assert describe(OperationalError("refused\nmore")).startswith("ClickHouse at ")
    assert describe(_s3_error("NoSuchBucket")).startswith("S3 at ")
    assert describe(_bad_json()).startswith("a document is not valid JSON")
    for exc in (OperationalError("a\nb"), KeyError("x"), ServiceUnavailable("one\ntwo")):
        assert "\n" not in describe(exc)

"""The Spark job: aggregate one extracted minute into its JSON report.

    spark-submit <site-packages>/etar/analysis/job.py s3a://<bucket>/<YYYY-MM-DD_HH-MM>.parquet

(``spark/spark.py`` is the same job under the seed's name.) It ships inside the package so an
installed etar submits it without a checkout; ``etar.analysis.submit`` builds the submit spec.

S3A settings (endpoint, path-style access) come from the caller's ``--conf``; credentials
from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), never the command line.
Writes ``<minute>.json`` next to the Parquet object: one JSON document, not a folder of part
files. The result is one stdout line starting with :data:`RESULT_MARKER` (Spark and its
libraries may print after it). Exit codes: 0 done, 2 no such object (input missing),
3 not readable as Parquet, 4 S3 unreachable, 5 bad data (readable Parquet that is not a
minute of events), 1 an internal error (a bug or a Spark failure, with its message).
"""

from __future__ import annotations

import json
import sys
import time

from etar.errors import EtarError
from etar.minute import Minute

EXIT_INTERNAL, EXIT_MISSING, EXIT_UNREADABLE, EXIT_UNREACHABLE, EXIT_BAD_DATA = 1, 2, 3, 4, 5
RESULT_MARKER = "ETAR_RESULT "
"""Prefix of the stdout line that carries the job's result (JSON)."""
REQUIRED_COLUMNS = {"event_type": "string", "status": "string", "error_code": "string",
                    "user_id": "string", "price": "double", "quantity": "int"}
"""Columns the aggregation reads, with their Spark types."""


def bad_columns(schema: dict[str, str]) -> list[str]:
    """What is wrong with a Parquet schema (column → Spark type) for the aggregation."""
    problems = []
    for column, kind in REQUIRED_COLUMNS.items():
        if column not in schema:
            problems.append(f"column {column!r} is missing")
        elif schema[column] != kind:
            problems.append(f"column {column!r} is {schema[column]}, not {kind}")
    return problems


def _fail(code: int, message: str) -> int:
    print(f"spark_job: {message}", file=sys.stderr)
    return code


def _first(exc: BaseException) -> str:
    """The first line of an exception's message (a JVM error's stack trace left out)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_read_failure(exc: BaseException) -> bool:
    """Spark failed while decoding the file (a corrupt page), not in the aggregation."""
    text = str(exc)
    return any(mark in text for mark in ("FAILED_READ_FILE", "ParquetDecodingException",
                                         "CANNOT_READ_FILE_FOOTER", "not a Parquet file"))


def main(argv: list[str]) -> int:
    from pyspark.sql import SparkSession  # here: etar.analysis.submit imports this module's codes

    from etar.analysis.aggregation import aggregate, finish

    if len(argv) != 2 or not argv[1].startswith("s3a://") or not argv[1].endswith(".parquet"):
        return _fail(1, "usage: spark.py s3a://<bucket>/<YYYY-MM-DD_HH-MM>.parquet")
    source = argv[1]
    try:
        minute = Minute.from_object_name(source)
    except EtarError as exc:
        return _fail(1, str(exc))
    spark = SparkSession.builder.appName(f"etar-analyze-{minute.stem}").getOrCreate()
    started = time.perf_counter()  # start-up (JVM, SparkSession) is over; compute begins
    try:
        jvm = spark.sparkContext._jvm
        assert jvm is not None, "the job runs on a classic (JVM) SparkSession"
        conf = spark.sparkContext._jsc.hadoopConfiguration()
        path = jvm.org.apache.hadoop.fs.Path(source)
        try:
            fs = path.getFileSystem(conf)
            found = fs.exists(path)
        except Exception as exc:
            return _fail(EXIT_UNREACHABLE, f"S3 is unreachable for {source}: {exc}")
        if not found:
            return _fail(EXIT_MISSING, f"no such object: {source}")
        try:
            events = spark.read.parquet(source)
        except Exception as exc:
            return _fail(EXIT_UNREADABLE, f"cannot read {source} as Parquet: {_first(exc)}")
        problems = bad_columns({f.name: f.dataType.simpleString() for f in events.schema})
        if problems:
            return _fail(EXIT_BAD_DATA, f"{source} is not a minute of events: "
                                        + "; ".join(problems))
        try:
            report = aggregate(events, minute)
        except Exception as exc:
            if _is_read_failure(exc):
                return _fail(EXIT_UNREADABLE, f"cannot read {source} as Parquet: {_first(exc)}")
            return _fail(EXIT_INTERNAL, f"aggregating {source} failed: {_first(exc)}")
        report = finish(report, source)
        target = jvm.org.apache.hadoop.fs.Path(source.removesuffix(".parquet") + ".json")
        try:
            stream = fs.create(target, True)
            try:
                stream.write(json.dumps(report, indent=2).encode())
            finally:
                stream.close()
        except Exception as exc:
            return _fail(EXIT_UNREACHABLE, f"cannot write {target}: {_first(exc)}")
        print(RESULT_MARKER + json.dumps({
            "written": str(target), "total_events": report["total_events"],
            "compute_s": round(time.perf_counter() - started, 3)}), flush=True)
        return 0
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv))

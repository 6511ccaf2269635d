"""The Spark job: aggregate one extracted minute into its JSON report.

    spark-submit <site-packages>/etar/spark_job.py s3a://<bucket>/<YYYY-MM-DD_HH-MM>.parquet

(``spark/spark.py`` is the same job under the seed's name.) It ships inside the package so an
installed etar submits it without a checkout; ``etar.spark_submit`` builds the submit spec.

S3A settings (endpoint, path-style access) come from the caller's ``--conf``; credentials
from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), never the command line.
Writes ``<minute>.json`` next to the Parquet object: one JSON document, not a folder of part
files. Exit codes: 0 done, 2 no such object, 3 unreadable Parquet, 4 S3 unreachable,
1 anything else.
"""

from __future__ import annotations

import json
import sys
import time

from pyspark.sql import SparkSession

from etar.analysis import aggregate, finish
from etar.errors import EtarError
from etar.minute import Minute

EXIT_MISSING, EXIT_UNREADABLE, EXIT_UNREACHABLE = 2, 3, 4


def _fail(code: int, message: str) -> int:
    print(f"spark_job: {message}", file=sys.stderr)
    return code


def main(argv: list[str]) -> int:
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
            report = aggregate(spark.read.parquet(source), minute)
        except Exception as exc:
            return _fail(EXIT_UNREADABLE, f"cannot read {source} as Parquet: {exc}")
        report = finish(report, source)
        target = jvm.org.apache.hadoop.fs.Path(source.removesuffix(".parquet") + ".json")
        stream = fs.create(target, True)
        try:
            stream.write(json.dumps(report, indent=2).encode())
        finally:
            stream.close()
        print(json.dumps({"written": str(target), "total_events": report["total_events"],
                          "compute_s": round(time.perf_counter() - started, 3)}))
        return 0
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Batch-plane benchmarks: extract per minute size, Spark by spark-submit vs. Spark Connect.

1. ``extract_minute`` (ClickHouse writes the Parquet, streamed to S3) for minutes of 100k and
   1M rows, generated inside ClickHouse into a table of their own; baseline in the same run:
   the former path (ClickHouse → pandas → Arrow → Parquet in memory, no upload).
2. The analysis of each extracted minute: ``spark-submit`` (wall time split into start-up —
   JVM, SparkSession — and compute) and the warm Spark Connect server of the stack.

Runs against the native stack (reused or started). Prints a table and writes
``benchmarks/results/batch.json``.

    uv run python benchmarks/batch.py [--sizes 100000 1000000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq

from etar.analysis.remote import analyze_minute as analyze_on_connect
from etar.analysis.submit import run_job
from etar.config import Settings, get_settings
from etar.extract import storage
from etar.extract.parquet import extract_minute, to_arrow
from etar.minute import Minute
from etar.warehouse import table as warehouse
from etar_stack import running

RESULTS = Path(__file__).parent / "results"

_FILL = """INSERT INTO {table} (event_id, user_id, session_id, event_type, status, error_code,
    error_message, product_id, price, quantity, currency, search_query, device, country,
    page_url, referrer, event_ts)
SELECT generateUUIDv4(number), generateUUIDv4(number % 5000), generateUUIDv4(number % 20000),
    toString(CAST((number % 7) + 1, 'Enum8(\\'PAGE_VIEW\\' = 1, \\'SEARCH\\' = 2,
        \\'PRODUCT_VIEW\\' = 3, \\'ADD_TO_CART\\' = 4, \\'REMOVE_FROM_CART\\' = 5,
        \\'CHECKOUT\\' = 6, \\'PURCHASE\\' = 7)')),
    if(number % 20 = 0, 'ERROR', 'SUCCESS'),
    if(number % 20 = 0, 'HTTP_500', NULL), if(number % 20 = 0, 'internal server error', NULL),
    concat('P', toString(number % 200)), (number % 400) + 0.99, toInt32(number % 3 + 1), 'EUR',
    NULL, ['DESKTOP', 'MOBILE', 'TABLET'][number % 3 + 1], 'DE', '/product', NULL,
    toDateTime64({minute:DateTime('UTC')}, 3, 'UTC') + toIntervalMillisecond(number % 60000)
FROM numbers({rows:UInt64})"""


def _fill(settings: Settings, minute: Minute, rows: int) -> None:
    warehouse.client(settings).command(_FILL.replace("{table}", settings.clickhouse_table),
                                       parameters={"minute": minute.sql_param, "rows": rows})


def _pandas_extract(minute: Minute, settings: Settings) -> tuple[float, int]:
    """The former extract, as the baseline: pandas → Arrow → Parquet in memory."""
    tracemalloc.start()
    begin = time.perf_counter()
    frame = warehouse.read_minute(minute, settings=settings, uuid_as_text=True)
    pq.write_table(to_arrow(frame), io.BytesIO(), compression="zstd")
    seconds = time.perf_counter() - begin
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    base = get_settings()
    settings = base.model_copy(update={"clickhouse_table": "bench_batch",
                                       "s3_bucket": "etar-bench"})
    rows_out = []
    with running(base):
        try:
            warehouse.client(settings).command("DROP TABLE IF EXISTS bench_batch")
            warehouse.apply_schema(settings=settings)
            storage.ensure_bucket(settings)
            now = Minute.containing(datetime.now(UTC))
            for index, size in enumerate(args.sizes):
                minute = Minute(now.start - timedelta(minutes=10 + index))
                _fill(settings, minute, size)
                assert warehouse.count_minute(minute, settings=settings) == size
                baseline_s, baseline_peak = _pandas_extract(minute, settings)
                tracemalloc.start()
                begin = time.perf_counter()
                name = extract_minute(minute, settings)
                extract_s = time.perf_counter() - begin
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                assert name is not None
                size_bytes = storage.client(settings).stat_object(settings.s3_bucket, name).size
                job = run_job(storage.s3a_url(name, settings), settings)
                report = storage.read_json(job.report, settings)
                assert report["total_events"] == size
                connect = [analyze_on_connect(minute, settings) for _ in range(2)][-1]  # warm
                assert storage.read_json(connect.report, settings)["total_events"] == size
                rows_out.append({"rows": size, "extract_s": extract_s,
                                 "extract_rows_per_s": size / extract_s,
                                 "extract_peak_python_mib": peak / 2**20,
                                 "baseline_pandas_extract_s": baseline_s,
                                 "baseline_pandas_peak_python_mib": baseline_peak / 2**20,
                                 "parquet_mib": (size_bytes or 0) / 2**20,
                                 "spark_wall_s": job.wall_s, "spark_startup_s": job.startup_s,
                                 "spark_compute_s": job.compute_s,
                                 "connect_wall_s": connect.wall_s})
        finally:
            warehouse.client(settings).command("DROP TABLE IF EXISTS bench_batch")
            storage.drop_bucket(settings)

    print(f"\n{os.cpu_count()} cores, Spark master {base.spark_master}\n")
    print(f"{'rows':>10} {'extract s':>10} {'py MiB':>7} {'pandas s':>9} {'pandas MiB':>11}"
          f" {'vs pandas':>10} {'parquet MiB':>12} {'submit s':>9} {'start-up s':>11}"
          f" {'connect s':>10} {'vs submit':>10}")
    for row in rows_out:
        print(f"{row['rows']:>10,} {row['extract_s']:>10.2f}"
              f" {row['extract_peak_python_mib']:>7.0f} {row['baseline_pandas_extract_s']:>9.2f}"
              f" {row['baseline_pandas_peak_python_mib']:>11.0f}"
              f" {row['baseline_pandas_extract_s'] / row['extract_s']:>9.1f}x"
              f" {row['parquet_mib']:>12.1f} {row['spark_wall_s']:>9.1f}"
              f" {row['spark_startup_s']:>11.1f} {row['connect_wall_s']:>10.2f}"
              f" {row['spark_wall_s'] / row['connect_wall_s']:>9.1f}x")
    if len(rows_out) > 1:
        first, last = rows_out[0], rows_out[-1]
        print(f"\n{last['rows'] // first['rows']}x the rows: extract "
              f"{last['extract_s'] / first['extract_s']:.1f}x the time, Spark compute "
              f"{last['spark_compute_s'] / first['spark_compute_s']:.1f}x")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "batch.json").write_text(json.dumps(
        {"runs": rows_out, "machine": {"cores": os.cpu_count()}}, indent=2))
    print(f"\nwritten {RESULTS / 'batch.json'}")


if __name__ == "__main__":
    main()

"""Warehouse benchmarks: the HTTP endpoint's overhead, sink throughput and latency.

1. Insert rows/s of the same Arrow table through the native stack's ClickHouse HTTP endpoint
   (clickhouse-connect) vs chdb in-process (the baseline): the endpoint's overhead as a ratio.
2. Sink throughput: a backlog of events already in Kafka drained into ClickHouse, rows/s.
3. Event → queryable latency (p50/p95/max) while the producer runs at a fixed rate:
   ``ingested_at`` (set by ClickHouse at insert) minus ``event_ts`` (set when produced).

Runs against the native stack (reused or started) on topics and tables of its own.
Prints a table and writes ``benchmarks/results/warehouse.json``.

    uv run python benchmarks/warehouse.py [--rows 200000] [--rate 2000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import chdb
import pyarrow as pa

from etar import warehouse
from etar.config import Settings, get_settings
from etar.events import EventGenerator, GeneratorConfig
from etar.native import running
from etar.topics import ensure_topic

RESULTS = Path(__file__).parent / "results"


def _arrow_events(rows: int) -> pa.Table:
    events = EventGenerator(GeneratorConfig(seed=1)).take(rows)
    columns = {name: [getattr(e, name) for e in events] for name in warehouse.COLUMNS}
    for name in ("event_id", "user_id", "session_id"):
        columns[name] = [str(v) for v in columns[name]]
    for name in ("event_type", "status"):
        columns[name] = [v.value for v in columns[name]]
    table = pa.table(columns)
    return table.set_column(table.schema.get_field_index("event_ts"), "event_ts",
                            table.column("event_ts").cast(pa.timestamp("ms", tz="UTC")))


def insert_http_vs_inprocess(settings: Settings, rows: int, repeat: int = 3
                             ) -> dict[str, float]:
    """Best of ``repeat`` inserts of one Arrow table, after a warm-up, each path."""
    data = _arrow_events(rows)
    ddl = warehouse.table_ddl(settings.model_copy(update={"clickhouse_table": "bench_insert"}))
    limit = {"max_partitions_per_insert_block": 1000}
    ch = warehouse.client(settings)
    ch.command("DROP TABLE IF EXISTS bench_insert")
    ch.command(ddl)
    http_s = []
    for attempt in range(repeat + 1):
        ch.command("TRUNCATE TABLE bench_insert")
        started = time.perf_counter()
        ch.insert_arrow("bench_insert", data if attempt else data.slice(0, 1000), settings=limit)
        http_s.append(time.perf_counter() - started)
    assert ch.command("SELECT count() FROM bench_insert") == rows
    ch.command("DROP TABLE bench_insert")

    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, data.schema) as writer:
        writer.write_table(data)
    payload = sink.getvalue().to_pybytes()
    statement = (f"INSERT INTO bench_insert ({', '.join(warehouse.COLUMNS)}) "
                 "SETTINGS max_partitions_per_insert_block = 1000")
    local_s = []
    with tempfile.TemporaryDirectory() as folder:
        conn = chdb.connect(folder)
        conn.query(ddl)
        for _ in range(repeat + 1):
            conn.query("TRUNCATE TABLE bench_insert")
            started = time.perf_counter()
            inserter = conn.send_insert(statement, "Arrow")
            inserter.append(payload)
            inserter.finish()
            local_s.append(time.perf_counter() - started)
        assert conn.query("SELECT count() FROM bench_insert").bytes().strip() == str(rows).encode()
        conn.close()
    http, local = min(http_s[1:]), min(local_s[1:])
    return {"rows": rows, "http_rows_per_s": rows / http, "inprocess_rows_per_s": rows / local,
            "http_vs_inprocess": local / http}


def _lane(settings: Settings, tag: str) -> Settings:
    lane = settings.model_copy(update={
        "kafka_topic": f"bench_{tag}", "kafka_dlq_topic": f"bench_{tag}_dlq",
        "clickhouse_table": f"bench_{tag}", "sink_group_id": f"bench-{tag}"})
    ensure_topic(lane, lane.kafka_topic, settings.kafka_topic_partitions,
                 {"retention.ms": str(30 * 60 * 1000)})
    ensure_topic(lane, lane.kafka_dlq_topic, 1)
    warehouse.apply_schema(settings=lane)
    return lane


def _etar(lane: Settings, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **lane.environ("kafka_topic", "kafka_dlq_topic", "clickhouse_table",
                                        "sink_group_id")}
    return subprocess.Popen([sys.executable, "-m", "etar", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _count(lane: Settings) -> int:
    return int(warehouse.client(lane).command(f"SELECT count() FROM {lane.clickhouse_table}"))


def sink_throughput(settings: Settings, rows: int) -> dict[str, float]:
    lane = _lane(settings, f"drain_{uuid.uuid4().hex[:6]}")
    producer = _etar(lane, "produce", "--count", str(rows), "--rate", "0", "--processes", "2")
    assert producer.wait() == 0
    sink = _etar(lane, "sink")
    started = time.perf_counter()
    try:
        while _count(lane) < rows:
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
    finally:
        sink.terminate()
        sink.wait(30)
        warehouse.client(lane).command(f"DROP TABLE {lane.clickhouse_table}")
    return {"rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed}


def latency(settings: Settings, rate: float, seconds: float) -> dict[str, float]:
    lane = _lane(settings, f"latency_{uuid.uuid4().hex[:6]}")
    sink = _etar(lane, "sink")
    time.sleep(3)  # let the sink join its group
    producer = _etar(lane, "produce", "--rate", str(rate), "--duration", str(seconds))
    try:
        assert producer.wait() == 0
        expected = int(rate * seconds * 0.95)
        deadline = time.monotonic() + 60
        while _count(lane) < expected and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)
        row = warehouse.client(lane).query(
            "SELECT count(), quantiles(0.5, 0.95)(dateDiff('millisecond', event_ts, "
            f"ingested_at)), max(dateDiff('millisecond', event_ts, ingested_at)) "
            f"FROM {lane.clickhouse_table}").result_rows[0]
    finally:
        sink.terminate()
        sink.wait(30)
        warehouse.client(lane).command(f"DROP TABLE {lane.clickhouse_table}")
    return {"rate": rate, "seconds": seconds, "rows": row[0], "p50_ms": row[1][0],
            "p95_ms": row[1][1], "max_ms": row[2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=2_000)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    settings = get_settings()
    with running(settings):
        insert = insert_http_vs_inprocess(settings, args.rows)
        drain = sink_throughput(settings, args.rows // 2)
        lat = latency(settings, args.rate, args.seconds)
    print(f"\n{os.cpu_count()} cores\n")
    print(f"{'measure':<52} {'value':>14}")
    print(f"{'insert, chdb in-process (baseline), rows/s':<52} "
          f"{insert['inprocess_rows_per_s']:>14,.0f}")
    print(f"{'insert, HTTP endpoint (clickhouse-connect), rows/s':<52} "
          f"{insert['http_rows_per_s']:>14,.0f}")
    print(f"{'  HTTP / in-process':<52} {insert['http_vs_inprocess']:>13.2f}x")
    print(f"{'sink draining a Kafka backlog, rows/s':<52} {drain['rows_per_s']:>14,.0f}")
    label = f"event → queryable at {lat['rate']:.0f} ev/s, p50 ms"
    print(f"{label:<52} {lat['p50_ms']:>14,.0f}")
    print(f"{'  p95 ms':<52} {lat['p95_ms']:>14,.0f}")
    print(f"{'  max ms':<52} {lat['max_ms']:>14,.0f}")
    RESULTS.mkdir(exist_ok=True)
    report = {"insert": insert, "sink_drain": drain, "latency": lat,
              "machine": {"cores": os.cpu_count()}}
    (RESULTS / "warehouse.json").write_text(json.dumps(report, indent=2))
    print(f"\nwritten {RESULTS / 'warehouse.json'}")


if __name__ == "__main__":
    main()

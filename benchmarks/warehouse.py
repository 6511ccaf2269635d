"""Warehouse benchmarks: the HTTP endpoint's overhead, sink throughput and latency.

1. Insert rows/s of the same Arrow table through the native stack's ClickHouse HTTP endpoint
   (clickhouse-connect) vs chdb in-process (the baseline): the endpoint's overhead as a ratio.
2. Sink throughput: a backlog of events already in Kafka drained into ClickHouse, rows/s,
   timed from the first rows in ClickHouse (the sink's start-up and group join excluded;
   the time including them is reported beside it).
3. Sustained load: events sent at a fixed rate for a while; event → queryable latency
   (p50/p95/max of ``ingested_at`` - ``event_ts``: ClickHouse stamps ``ingested_at`` at insert,
   the sender stamps ``event_ts`` when it sends) and the group's lag (broker end offsets -
   committed offsets) sampled over time, beside the lag the sink itself reports
   (``etar stack status``).

Events come from ``etar produce`` (``--source produce``) or from a replay of pre-encoded
messages (``--source replay``, the default): real events serialized once through the registry,
re-stamped (``event_ts`` is the last Avro field) with a fresh ``event_id`` per message, sent at
the rate by a plain producer — the sink's load without the producer's Python cost.

``--sink-dir DIR`` runs the sink from another checkout (e.g. ``git archive main``), for a
before/after comparison on the same stack in the same run.

Runs against the native stack (reused or started) on topics and tables of its own.
Prints a table and writes ``benchmarks/results/warehouse.json``.

    uv run python benchmarks/warehouse.py [--rows 200000] [--rate 20000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import chdb
import pyarrow as pa
from confluent_kafka import Producer
from confluent_kafka.serialization import MessageField, SerializationContext
from harness import group_lag

from etar import topics
from etar.config import Settings, get_settings
from etar.events.event import EventGenerator, GeneratorConfig
from etar.events.serde import event_serializer, registry_client
from etar.sink.consumer import read_progress
from etar.topics import ensure_topic
from etar.warehouse import table as warehouse
from etar_stack import running
from etar_stack.services.sink import ready as sink_ready

RESULTS = Path(__file__).parent / "results"
LOGS = Path(tempfile.gettempdir()) / "etar-bench-warehouse"


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
    """Best of ``repeat`` inserts of one Arrow table each path, after a warm-up of each.

    The two paths take turns (HTTP, in-process, HTTP, …) so that a load change on a shared
    machine weighs on both alike.
    """
    data = _arrow_events(rows)
    ddl = warehouse.table_ddl(settings.model_copy(update={"clickhouse_table": "bench_insert"}))
    limit = {"max_partitions_per_insert_block": 1000}
    ch = warehouse.client(settings)
    ch.command("DROP TABLE IF EXISTS bench_insert")
    ch.command(ddl)

    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, data.schema) as writer:
        writer.write_table(data)
    payload = sink.getvalue().to_pybytes()
    statement = (f"INSERT INTO bench_insert ({', '.join(warehouse.COLUMNS)}) "
                 "SETTINGS max_partitions_per_insert_block = 1000")
    http_s, local_s = [], []
    with tempfile.TemporaryDirectory() as folder:
        conn = chdb.connect(folder)
        conn.query(ddl)
        for attempt in range(repeat + 1):
            ch.command("TRUNCATE TABLE bench_insert")
            started = time.perf_counter()
            ch.insert_arrow("bench_insert", data if attempt else data.slice(0, 1000),
                            settings=limit)
            http_s.append(time.perf_counter() - started)

            conn.query("TRUNCATE TABLE bench_insert")
            started = time.perf_counter()
            inserter = conn.send_insert(statement, "Arrow")
            inserter.append(payload)
            inserter.finish()
            local_s.append(time.perf_counter() - started)
        assert conn.query("SELECT count() FROM bench_insert").bytes().strip() == str(rows).encode()
        conn.close()
    assert ch.command("SELECT count() FROM bench_insert") == rows
    ch.command("DROP TABLE bench_insert")
    http, local = min(http_s[1:]), min(local_s[1:])
    per_turn = sorted(lo / hi for lo, hi in zip(local_s[1:], http_s[1:], strict=True))
    return {"rows": rows, "http_rows_per_s": rows / http, "inprocess_rows_per_s": rows / local,
            "http_vs_inprocess": local / http,
            "http_vs_inprocess_median_of_turns": per_turn[len(per_turn) // 2]}


# --- sending events -----------------------------------------------------------------------
def _zigzag_long(value: int) -> bytes:
    """Avro's encoding of a long (zig-zag varint)."""
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _templates(settings: Settings, count: int = 5_000) -> list[tuple[bytes, bytes]]:
    """(key, value without its trailing event_ts) of real events, framed by the registry."""
    serializer = event_serializer(registry_client(settings))
    ctx = SerializationContext(settings.kafka_topic, MessageField.VALUE)
    templates = []
    for event in EventGenerator(GeneratorConfig(seed=7)).take(count):
        value = serializer(event, ctx)
        assert value is not None
        ts = _zigzag_long(int(event.event_ts.timestamp() * 1000))
        assert value.endswith(ts)
        templates.append((event.user_id.bytes, value[:-len(ts)]))
    return templates


def _replay(settings: Settings, rate: float, count: int, seconds: float,
            done: Any) -> None:
    """Send ``count`` events (or ``seconds`` x ``rate``) re-stamped now, at ``rate`` (0 = max)."""
    templates = _templates(settings)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "linger.ms": 5, "batch.size": 256 * 1024, "acks": "all",
                         "enable.idempotence": True, "compression.type": "lz4",
                         "queue.buffering.max.messages": 1_000_000})
    total = count or int(rate * seconds)
    run = uuid.uuid4().hex[:6].encode()
    started = time.monotonic()
    sent = 0
    while sent < total:
        if rate > 0:
            due = int((time.monotonic() - started) * rate) + 1
            if due <= sent:
                producer.poll(0.002)
                continue
            upto = min(total, due)
        else:
            upto = min(total, sent + 5_000)
        now_ms = _zigzag_long(int(time.time() * 1000))
        while sent < upto:
            key, head = templates[sent % len(templates)]
            # event_id's last 12 characters become this run and message's number: unique
            value = head[:30] + run + b"%06x" % (sent & 0xFFFFFF) + head[42:] + now_ms
            try:
                producer.produce(settings.kafka_topic, value=value, key=key)
            except BufferError:
                producer.poll(0.05)
                continue
            sent += 1
        producer.poll(0)
    producer.flush(60)
    done.value = sent


def send(settings: Settings, source: str, rate: float, count: int = 0,
         seconds: float = 0) -> tuple[mp.process.BaseProcess | subprocess.Popen[bytes], Any]:
    """Start sending in the background; returns the process and a shared sent counter."""
    ctx = mp.get_context("spawn")
    done = ctx.Value("q", 0)
    if source == "replay":
        process = ctx.Process(target=_replay, args=(settings, rate, count, seconds, done))
        process.start()
        return process, done
    args = ["produce", "--rate", str(rate), "--processes", "2"]
    args += ["--count", str(count)] if count else ["--duration", str(seconds)]
    done.value = count or int(rate * seconds)
    return _etar(settings, *args), done


def _wait(process: mp.process.BaseProcess | subprocess.Popen[bytes], timeout: float) -> None:
    if isinstance(process, subprocess.Popen):
        assert process.wait(timeout) == 0
    else:
        process.join(timeout)
        assert process.exitcode == 0


# --- the sink -------------------------------------------------------------------------
def _lane(settings: Settings, tag: str) -> Settings:
    lane = settings.model_copy(update={
        "kafka_topic": f"bench_{tag}", "kafka_dlq_topic": f"bench_{tag}_dlq",
        "clickhouse_table": f"bench_{tag}", "sink_group_id": f"bench-{tag}"})
    ensure_topic(lane, lane.kafka_topic, settings.kafka_topic_partitions,
                 {"retention.ms": str(30 * 60 * 1000)})
    ensure_topic(lane, lane.kafka_dlq_topic, 1)
    warehouse.apply_schema(settings=lane)
    return lane


def _etar(lane: Settings, *args: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    # the stack's addresses too: another checkout (``--sink-dir``) has no ``.env`` of its own
    env = {**os.environ, **lane.environ(
        "kafka_topic", "kafka_dlq_topic", "clickhouse_table", "sink_group_id", "state_dir",
        "kafka_bootstrap_servers", "schema_registry_url", "clickhouse_host", "clickhouse_port",
        "clickhouse_user", "clickhouse_password", "clickhouse_database")}
    env.pop("PYTHONPATH", None)
    log = LOGS / f"{lane.kafka_topic}-{args[0]}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "etar", *args], env=env, cwd=cwd,
                                stdout=out, stderr=subprocess.STDOUT)


def _count(lane: Settings) -> int:
    return int(warehouse.client(lane).command(f"SELECT count() FROM {lane.clickhouse_table}"))


def _stop(sink: subprocess.Popen[bytes], lane: Settings) -> None:
    sink.terminate()
    try:
        sink.wait(30)
    except subprocess.TimeoutExpired:
        sink.kill()
        sink.wait(10)
    warehouse.client(lane).command(f"DROP TABLE IF EXISTS {lane.clickhouse_table}")


def sink_throughput(settings: Settings, rows: int, source: str,
                    sink_dir: Path | None) -> dict[str, float]:
    """Drain a backlog of ``rows`` events; rows/s from the first rows in ClickHouse."""
    lane = _lane(settings, f"drain_{uuid.uuid4().hex[:6]}")
    process, _ = send(lane, source, 0, count=rows)
    _wait(process, 600)
    launched = time.perf_counter()
    sink = _etar(lane, "sink", cwd=sink_dir)
    try:
        first = 0
        deadline = time.monotonic() + 600
        while (first := _count(lane)) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.perf_counter()
        while (stored := _count(lane)) < rows and time.monotonic() < deadline:
            time.sleep(0.1)
        ended = time.perf_counter()
        assert stored == rows, f"{stored} rows of {rows}"
    finally:
        _stop(sink, lane)
    return {"rows": rows, "seconds": ended - started, "first_rows": first,
            "rows_per_s": (rows - first) / (ended - started),
            "with_startup_s": ended - launched,
            "with_startup_rows_per_s": rows / (ended - launched)}


def sustained(settings: Settings, rate: float, seconds: float, source: str,
              sink_dir: Path | None, every: float = 2.0) -> dict[str, Any]:
    """Send at ``rate`` for ``seconds``; latency quantiles and lag over time."""
    lane = _lane(settings, f"latency_{uuid.uuid4().hex[:6]}")
    sink = _etar(lane, "sink", cwd=sink_dir)
    consumer = topics.consumer(lane, lane.sink_group_id)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if sink_ready(lane):
                    break
            except Exception:  # the group does not exist yet
                pass
            time.sleep(0.5)
        process, sent = send(lane, source, rate, seconds=seconds)
        started = time.monotonic()
        samples: list[dict[str, float]] = []
        while time.monotonic() - started < seconds + 60:
            time.sleep(every)
            progress = read_progress(lane)
            samples.append({"t": round(time.monotonic() - started, 1),
                            "lag": group_lag(lane, consumer, settings.kafka_topic_partitions),
                            "sink_reported_lag": progress.lag if progress else -1,
                            "rows": _count(lane)})
            finished = (process.poll() is not None if isinstance(process, subprocess.Popen)
                        else process.exitcode is not None)
            if finished and sent.value and samples[-1]["rows"] >= sent.value:
                break
        _wait(process, 60)
        row = warehouse.client(lane).query(
            "SELECT count(), quantiles(0.5, 0.95, 0.99)(dateDiff('millisecond', event_ts, "
            "ingested_at)), max(dateDiff('millisecond', event_ts, ingested_at)), "
            f"min(event_ts), max(event_ts) FROM {lane.clickhouse_table}").result_rows[0]
        windows = warehouse.client(lane).query(
            "SELECT toStartOfInterval(event_ts, INTERVAL 10 SECOND) AS w, count(), "
            "quantile(0.95)(dateDiff('millisecond', event_ts, ingested_at)) "
            f"FROM {lane.clickhouse_table} GROUP BY w ORDER BY w").result_rows
    finally:
        consumer.close()
        _stop(sink, lane)
    sending = [s for s in samples if s["t"] <= seconds]
    third = max(1, len(sending) // 3)
    return {"rate": rate, "seconds": seconds, "source": source, "sent": sent.value,
            "rows": row[0], "achieved_rate": row[0] / max(
                (row[4] - row[3]).total_seconds(), 1e-9),
            "p50_ms": row[1][0], "p95_ms": row[1][1], "p99_ms": row[1][2], "max_ms": row[2],
            "lag_first_third": sum(s["lag"] for s in sending[:third]) / third,
            "lag_last_third": sum(s["lag"] for s in sending[-third:]) / third,
            "lag_max": max((s["lag"] for s in sending), default=0),
            "p95_ms_per_10s": [int(w[2]) for w in windows],
            "lag_samples": samples}


def _print(label: str, value: str) -> None:
    print(f"{label:<58} {value:>16}")


def _report(name: str, drain: dict[str, float], sus: dict[str, Any] | None) -> None:
    _print(f"[{name}] sink draining a backlog, rows/s (start-up excluded)",
           f"{drain['rows_per_s']:,.0f}")
    _print(f"[{name}]   including start-up, rows/s", f"{drain['with_startup_rows_per_s']:,.0f}")
    if sus is None:
        return
    _print(f"[{name}] sustained {sus['rate']:,.0f} ev/s x {sus['seconds']:.0f}s ({sus['source']}),"
           " achieved ev/s", f"{sus['achieved_rate']:,.0f}")
    _print(f"[{name}]   event → queryable p50 / p95 / max, ms",
           f"{sus['p50_ms']:,.0f} / {sus['p95_ms']:,.0f} / {sus['max_ms']:,.0f}")
    _print(f"[{name}]   lag first third → last third (max)",
           f"{sus['lag_first_third']:,.0f} → {sus['lag_last_third']:,.0f} ({sus['lag_max']:,})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="insert / backlog rows")
    parser.add_argument("--rate", type=float, default=20_000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--source", choices=("replay", "produce"), default="replay")
    parser.add_argument("--sink-dir", type=Path, action="append", default=[],
                        help="also measure the sink of this checkout (repeatable)")
    parser.add_argument("--skip-insert", action="store_true")
    parser.add_argument("--skip-sustained", action="store_true",
                        help="measure only the backlog drain (no sustained run)")
    parser.add_argument("--skip-sink", action="store_true",
                        help="only the insert measure (HTTP endpoint vs in-process)")
    parser.add_argument("--insert-repeat", type=int, default=3,
                        help="timed inserts per path (after a warm-up); the best counts")
    args = parser.parse_args()
    settings = get_settings()
    results: dict[str, Any] = {"machine": {"cores": os.cpu_count()},
                               "loadavg_before": os.getloadavg()}
    with running(settings):
        if not args.skip_insert:
            results["insert"] = insert_http_vs_inprocess(settings, args.rows,
                                                         args.insert_repeat)
        sinks: dict[str, Path | None] = {}
        if not args.skip_sink:
            sinks = {"this": None, **{str(path): path for path in args.sink_dir}}
        for name, path in sinks.items():
            results[name] = {
                "sink_drain": sink_throughput(settings, args.rows, args.source, path)}
            if not args.skip_sustained:
                results[name]["sustained"] = sustained(settings, args.rate, args.seconds,
                                                       args.source, path)
    results["loadavg_after"] = os.getloadavg()
    print(f"\n{os.cpu_count()} cores, load average {results['loadavg_before'][0]:.1f} → "
          f"{results['loadavg_after'][0]:.1f} (absolute figures are taken under that load)\n")
    _print("measure", "value")
    if "insert" in results:
        insert = results["insert"]
        _print("insert, chdb in-process (baseline), rows/s",
               f"{insert['inprocess_rows_per_s']:,.0f}")
        _print("insert, HTTP endpoint (clickhouse-connect), rows/s",
               f"{insert['http_rows_per_s']:,.0f}")
        _print("  HTTP / in-process", f"{insert['http_vs_inprocess']:.2f}x")
    for name in sinks:
        _report(name, results[name]["sink_drain"], results[name].get("sustained"))
    if len(sinks) > 1:
        base = results[next(iter(args.sink_dir)).__str__()]
        this = results["this"]
        _print("drain rows/s, this / other",
               f"{this['sink_drain']['rows_per_s'] / base['sink_drain']['rows_per_s']:.1f}x")
        if "sustained" in this:
            _print("sustained p95, this / other",
                   f"{this['sustained']['p95_ms'] / max(base['sustained']['p95_ms'], 1):.2f}x")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "warehouse.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwritten {RESULTS / 'warehouse.json'}")


if __name__ == "__main__":
    main()

"""Producer throughput: `etar produce` with 1 and 2 processes vs Kafka's own perf tool.

Kafka's ``ProducerPerformance`` (kafka-tools) sends pre-built records of the same size with
the same producer settings (acks=all, idempotence, lz4, linger 20 ms), so it is the ceiling
of what the broker takes on this machine; etar's ratio to it is the cost of generating
events, Avro serialization and Python. Both rates count from the first record sent to the
last one acknowledged (``sending_s``; ProducerPerformance's own clock); etar's rate with its
processes' start-up is shown beside it. Runs against the native stack (reused or started),
on a topic of its own. Prints a table (medians over ``--rounds``) and writes every run to
``benchmarks/results/producer.json``.

``--baseline DIR`` adds rows for the etar package of another checkout (e.g. ``main`` exported
to /tmp) measured in the same run, for before/after tables.

    uv run python benchmarks/producer.py [--duration 20] [--rounds 3] [--baseline /tmp/etar-main]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from statistics import mean, median

from etar import topics
from etar.config import get_settings
from etar.events.event import EventGenerator, GeneratorConfig
from etar.events.serde import EventValueWriter
from etar.produce.producer import producer_config
from etar_stack import running
from etar_stack.services import kafka

RESULTS = Path(__file__).parent / "results"
TOPIC = "etar_bench_producer"


def record_size() -> int:
    """Mean size of an event value on the wire (5-byte Confluent header + Avro body)."""
    writer = EventValueWriter(schema_id=1)
    records = [record for _, record in EventGenerator(GeneratorConfig(seed=1)).records(2_000)]
    return round(mean(len(value) for value in writer.write(records)))


def run_etar(processes: int, duration: float, source: Path | None = None) -> dict[str, float]:
    """One ``etar produce`` run; ``source``: a checkout whose ``etar`` package to run instead."""
    env = {**os.environ, "ETAR_KAFKA_TOPIC": TOPIC}
    python = [sys.executable]
    if source is not None:  # -P: not the current directory (this checkout) first on sys.path
        env["PYTHONPATH"] = str(source)
        python.append("-P")
    result = subprocess.run(
        [*python, "-m", "etar", "produce", "--rate", "0", "--duration", str(duration),
         "--processes", str(processes), "--seed", "1"],
        capture_output=True, text=True, env=env, check=True)
    fields = dict(item.split("=", 1) for item in result.stdout.split())
    delivered, elapsed = int(fields["delivered"]), float(fields["elapsed_s"])
    sending = float(fields.get("sending_s", 0.0))  # absent from older summaries
    return {"events_per_s": delivered / sending if sending else float("nan"),
            "with_startup_events_per_s": float(fields["events_per_s"]), "delivered": delivered,
            "failed": int(fields["failed"]), "elapsed_s": elapsed, "sending_s": sending}


def run_kafka_perf(size: int, records: int) -> dict[str, float]:
    settings = get_settings()
    shared = ("bootstrap.servers", "acks", "enable.idempotence", "compression.type",
              "linger.ms", "batch.size")
    props = [f"{key}={str(value).lower()}" for key, value in producer_config(settings).items()
             if key in shared]
    command = kafka.perf_test_command(
        settings, "--topic", TOPIC, "--num-records", str(records), "--record-size", str(size),
        "--throughput", "-1", "--producer-props", *props)
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    last = [line for line in output.splitlines() if "records sent" in line][-1]
    match = re.search(r"(\d+) records sent, ([\d.]+) records/sec", last)
    assert match, last
    return {"events_per_s": float(match.group(2)), "delivered": int(match.group(1))}


def _median(values: list[float]) -> float:
    return median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per etar run")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every run (median)")
    parser.add_argument("--baseline", type=Path, help="checkout whose etar to measure as well")
    args = parser.parse_args()
    settings = get_settings()
    sources: dict[str, Path | None] = {"etar produce": None}
    if args.baseline is not None:
        sources[f"baseline {args.baseline.name}"] = args.baseline.resolve()
    runs = {f"{label}, {p} process{'es' if p > 1 else ''}": (p, source)
            for label, source in sources.items() for p in (1, 2)}
    # The load of a shared machine drifts: the ceiling is measured before every round and
    # after the last, and each etar run is compared with the mean of the two around it.
    ceilings: list[dict[str, float]] = []
    results: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    with running(settings):
        topics.ensure_topic(settings, TOPIC, settings.kafka_topic_partitions,
                           {"retention.ms": str(10 * 60 * 1000)})
        size = record_size()
        records = int(args.duration * 100_000)
        for _ in range(args.rounds):
            ceilings.append(run_kafka_perf(size, records))
            for name, (processes, source) in runs.items():
                results[name].append(run_etar(processes, args.duration, source))
        ceilings.append(run_kafka_perf(size, records))
    for index, ceiling in enumerate(ceilings[:-1]):
        base = (ceiling["events_per_s"] + ceilings[index + 1]["events_per_s"]) / 2
        for name in runs:
            row = results[name][index]
            row["ceiling_events_per_s"] = base
            row["ratio_to_ceiling"] = row["events_per_s"] / base
            row["with_startup_ratio_to_ceiling"] = row["with_startup_events_per_s"] / base

    print(f"\nrecord size {size} B, {args.duration:.0f} s per etar run, {args.rounds} round(s), "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; medians\n")
    print(f"{'run':<36} {'events/s':>10} {'vs ceiling':>11} {'with start-up':>14} "
          f"{'vs ceiling':>11}")
    ceiling_rate = _median([c["events_per_s"] for c in ceilings])
    print(f"{'kafka ProducerPerformance (ceiling)':<36} {ceiling_rate:>10,.0f} {1:>10.2f}x")
    summary = {}
    for name, rows in results.items():
        summary[name] = {key: _median([row[key] for row in rows]) for key in (
            "events_per_s", "ratio_to_ceiling", "with_startup_events_per_s",
            "with_startup_ratio_to_ceiling")}
        line = summary[name]
        sending = ("         -           -" if math.isnan(line["events_per_s"]) else  # no sending_s
                   f"{line['events_per_s']:>10,.0f} {line['ratio_to_ceiling']:>10.2f}x")
        print(f"{name:<36} {sending} {line['with_startup_events_per_s']:>14,.0f} "
              f"{line['with_startup_ratio_to_ceiling']:>10.2f}x")
    RESULTS.mkdir(exist_ok=True)
    report = {"record_size_bytes": size, "duration_s": args.duration, "rounds": args.rounds,
              "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                          "load_avg": os.getloadavg()},
              "ceiling_runs": ceilings, "median": summary, "runs": results}
    (RESULTS / "producer.json").write_text(json.dumps(report, indent=2))
    print(f"\nwritten {RESULTS / 'producer.json'}")


if __name__ == "__main__":
    main()

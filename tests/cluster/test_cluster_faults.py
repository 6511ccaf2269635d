"""Faults on the cluster topology while the producer sends: nothing lost, nothing doubled.

Each test sends a fixed-rate, seeded stream (``acks=all``, idempotent) into a minute of its
own, injects its fault mid-stream, waits (bounded) until ClickHouse holds every delivered
event and reconciles: delivered = distinct event_id = rows after ``OPTIMIZE … FINAL``, no new
dead letter, and the producer reports no failed delivery.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from etar.config import Settings
from etar.minute import Minute
from etar.report.minute_report import read_report
from etar.topics import admin
from etar_stack import stack
from etar_stack.services import kafka, spark_cluster
from tests.faults.harness import (
    SETTLE_TIMEOUT,
    FaultRow,
    Production,
    dead_letter_offsets,
    ingested_minute,
    kill,
    own_minute,
    ready,
    reconcile,
    service_pid,
    stored,
    wait_restarted,
    wait_until,
)
from tests.integration.lanes import env_for

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

RATE = 150.0
"""Events/s the producer sends during a fault."""
DOWN = 60.0
"""Seconds the killed leader broker is kept down (not restarted by the supervisor)."""


def _replicated(settings: Settings) -> bool:
    """Every partition of the event, dead-letter and offsets topics has all replicas in sync."""
    topics = admin(settings).list_topics(timeout=5).topics
    names = (settings.kafka_topic, settings.kafka_dlq_topic, "__consumer_offsets",
             settings.schemas_topic)
    return all(len(p.isrs) == len(p.replicas) == settings.kafka_replication_factor
               for name in names for p in topics[name].partitions.values())


def _start(settings: Settings, count: int, seed: int) -> tuple[Minute, dict[int, int],
                                                              Production]:
    assert settings.kafka_replication_factor == 3
    wait_until(lambda: _replicated(settings), 120, "every replica in sync")
    minute = own_minute()
    assert stored(settings, minute) == (0, 0), f"minute {minute} is not unused"
    return minute, dead_letter_offsets(settings), Production(settings, minute, count, RATE, seed)


def _finish(production: Production) -> int:
    """Delivered events; the producer must not have failed a single one."""
    out, err = production.process.communicate(timeout=300)
    found = re.search(r"delivered=(\d+) failed=(\d+)", out)
    assert found, f"no summary from the producer (exit {production.process.returncode}): {err}"
    assert int(found.group(2)) == 0, f"the producer failed deliveries: {out}{err[-2000:]}"
    assert production.process.returncode == 0, err[-2000:]
    return int(found.group(1))


def _settle(row: FaultRow, settings: Settings, minute: Minute, delivered: int,
            dlq: dict[int, int], since: float) -> None:
    try:
        wait_until(lambda: stored(settings, minute)[0] >= delivered, SETTLE_TIMEOUT,
                   f"{delivered} events of {minute} in ClickHouse")
        row.recover_s = time.monotonic() - since
    finally:
        reconcile(row, settings, minute, delivered, None, dlq)
    assert (row.lost, row.doubled, row.dead_letters) == (0, 0, 0), (
        f"{row.fault}: produced {row.produced}, ClickHouse {row.in_clickhouse}, lost "
        f"{row.lost}, doubled {row.doubled}, dead letters {row.dead_letters}; {row.note}")
    assert row.produced == row.in_clickhouse


def test_leader_broker_killed(cluster_settings: Settings, cluster_row: FaultRow) -> None:
    """kill -9 the broker leading most event partitions mid-stream and keep it down a full
    minute (a supervisor hold) while the producer sends: leadership moves to the in-sync
    replicas, the idempotent producer retries, no delivery fails; then the broker comes back
    and its replicas catch up."""
    settings, row = cluster_settings, cluster_row
    count = int(RATE * (20 + DOWN + 25))  # still sending 25 s after the broker is back
    minute, dlq, production = _start(settings, count, seed=2401)
    time.sleep(20)
    led = kafka.leaders(settings, settings.kafka_topic)
    node = max(led, key=lambda n: led[n])
    name = kafka.member_name(settings, node)
    stack(settings).hold(name, DOWN)
    old = kill(settings, name)
    killed = time.monotonic()
    wait_until(lambda: node not in kafka.leaders(settings, settings.kafka_topic), 60,
               f"leadership to move off node {node}")
    moved = time.monotonic() - killed
    time.sleep(max(0.0, DOWN - 3 - (time.monotonic() - killed)))
    assert service_pid(settings, name) == old and not ready(settings, name), (
        f"{name} was restarted within its {DOWN:.0f}s hold")
    assert production.process.poll() is None, "the producer finished before the broker was back"
    wait_restarted(settings, name, old)
    down = time.monotonic() - killed
    wait_until(lambda: _replicated(settings), 180, f"{name}'s replicas in sync")
    caught_up = time.monotonic() - killed - down
    delivered = _finish(production)
    row.note = (f"{name} led {led[node]}/6 partitions, killed and held down {down:.0f}s while "
                f"the producer sent; leaders moved in {moved:.0f}s; back and in sync "
                f"{caught_up:.0f}s after its restart")
    _settle(row, settings, minute, delivered, dlq, killed)


def test_sink_instance_killed(cluster_settings: Settings, cluster_row: FaultRow) -> None:
    """kill -9 one of the two sinks mid-stream: the other takes its partitions over (the
    committed plans make it cut the replay at the same offsets, which ClickHouse drops)."""
    settings, row = cluster_settings, cluster_row
    count = 6_000
    minute, dlq, production = _start(settings, count, seed=2402)
    time.sleep(count / RATE / 3)
    other = service_pid(settings, "sink-2")
    old = kill(settings, "sink-1")
    killed = time.monotonic()
    back = wait_restarted(settings, "sink-1", old)
    delivered = _finish(production)
    assert service_pid(settings, "sink-2") == other, "sink-2 was restarted too"
    row.note = f"sink-1 killed (sink-2 kept running, pid unchanged); sink-1 back in {back:.0f}s"
    _settle(row, settings, minute, delivered, dlq, killed)


def test_rolling_broker_restart(cluster_settings: Settings, cluster_row: FaultRow) -> None:
    """Both sinks up, the producer sending: each broker in turn is stopped (SIGTERM, a
    controlled shutdown), restarted by the supervisor, and caught up before the next."""
    settings, row = cluster_settings, cluster_row
    count = 15_000
    minute, dlq, production = _start(settings, count, seed=2403)
    sinks = {name: service_pid(settings, name) for name in ("sink-1", "sink-2")}
    time.sleep(10)
    began = time.monotonic()
    took = []
    for node, *_ in settings.kafka_members:
        name = kafka.member_name(settings, node)
        pid = service_pid(settings, name)
        step = time.monotonic()
        os.killpg(pid, signal.SIGTERM)
        wait_restarted(settings, name, pid)
        wait_until(lambda: _replicated(settings), 180, f"{name}'s replicas in sync")
        took.append(time.monotonic() - step)
    still_sending = production.process.poll() is None
    delivered = _finish(production)
    restarted = [n for n, p in sinks.items() if service_pid(settings, n) != p]
    row.note = (f"brokers 1-3 restarted in {', '.join(f'{t:.0f}' for t in took)}s (back and "
                f"in sync); producer {'still sending' if still_sending else 'had finished'}; "
                f"sinks restarted: {restarted or 'none'}")
    _settle(row, settings, minute, delivered, dlq, began)


def _worker_running_executor(settings: Settings, app: str, n: int) -> bool:
    state = spark_cluster._state(settings)
    port = f":{spark_cluster.worker_ui_port(settings, n)}"
    running = any(a.get("name") == app for a in state.get("activeapps", []))
    worker = [w for w in state.get("workers", []) if str(w.get("webuiaddress")).endswith(port)
              and w.get("state") == "ALIVE"]
    return running and bool(worker) and worker[0].get("coresused", 0) > 0


def test_spark_worker_killed_during_analysis(cluster_settings: Settings,
                                             cluster_row: FaultRow) -> None:
    """kill -9 a standalone worker (its executors die with it) while a minute's analysis runs
    in submit mode on the stack's master: the lost tasks run again on the other worker and the
    report counts every event once."""
    settings, row = cluster_settings, cluster_row
    assert settings.spark_mode == "submit" and settings.spark_master.startswith("spark://")
    count = 3_000
    dlq = dead_letter_offsets(settings)
    minute = ingested_minute(settings, count, seed=2404)
    env = env_for(settings)
    extract = subprocess.run([sys.executable, "-m", "etar", "extract", "--minute", str(minute)],
                             env=env, capture_output=True, text=True, timeout=180)
    assert extract.returncode == 0, extract.stderr[-2000:]
    analyze = subprocess.Popen([sys.executable, "-m", "etar", "analyze", "--minute",
                                str(minute)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    app = f"etar-analyze-{minute.start:%Y-%m-%d_%H-%M}"
    wait_until(lambda: _worker_running_executor(settings, app, 1), 120,
               f"an executor of {app} on spark-worker-1")
    old = kill(settings, "spark-worker-1")
    killed = time.monotonic()
    out, err = analyze.communicate(timeout=300)
    assert analyze.returncode == 0, f"the analysis failed: {out}{err[-3000:]}"
    row.recover_s = time.monotonic() - killed
    back = wait_restarted(settings, "spark-worker-1", old)
    report_total = int(read_report(minute, settings)["total_events"])
    row.note = (f"spark-worker-1 killed while it ran an executor of the analysis, which "
                f"finished {row.recover_s:.0f}s later (worker restarted {back:.0f}s after "
                f"that); report total_events {report_total}")
    reconcile(row, settings, minute, count, report_total, dlq)
    assert (row.lost, row.doubled, row.dead_letters) == (0, 0, 0), row
    assert report_total == row.in_clickhouse == count

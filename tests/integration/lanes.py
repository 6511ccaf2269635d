"""Helpers for tests that need a lane of their own: topic, table, consumer group, sink."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import httpx

from etar.config import Settings
from etar.events.event import Event, EventGenerator, GeneratorConfig, clock_within_minute
from etar.minute import Minute


def recent_minute(minutes_ago: int) -> Minute:
    """The closed minute that began ``minutes_ago`` minutes before the current one."""
    minute = Minute.containing(datetime.now(UTC))
    for _ in range(minutes_ago):
        minute = minute.previous
    return minute


def env_for(settings: Settings) -> dict[str, str]:
    """The environment of a producer or sink process working on the lane."""
    return {**os.environ, **settings.environ(
        "kafka_topic", "kafka_dlq_topic", "clickhouse_table", "sink_group_id", "s3_bucket",
        "sink_batch_rows", "sink_batch_seconds", "sink_idle_flush_seconds")}


def produce(settings: Settings, count: int, minute: Minute, seed: int, rate: float = 0,
            background: bool = False) -> subprocess.Popen[str] | None:
    command = [sys.executable, "-m", "etar", "produce", "--count", str(count), "--rate",
               str(rate), "--seed", str(seed), "--minute", str(minute)]
    process = subprocess.Popen(command, env=env_for(settings), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    if background:
        return process
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert f"delivered={count}" in out
    return None


def expected_events(count: int, minute: Minute, seed: int) -> list[Event]:
    """The events `etar produce --processes 1 --seed S --minute M` sends."""
    worker_seed = seed * 1_000
    clock = clock_within_minute(minute, random.Random(worker_seed))
    return EventGenerator(GeneratorConfig(seed=worker_seed), clock).take(count)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def start_sink(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "etar.sink.consumer"], env=env_for(settings),
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def delete_subjects(settings: Settings, containing: str) -> list[str]:
    """Soft- then hard-delete every registry subject whose name contains ``containing``
    (what a test registered); the subjects deleted."""
    url = settings.schema_registry_url.rstrip("/")
    with httpx.Client(base_url=url, timeout=30) as client:
        subjects = client.get("/subjects", params={"deleted": "true"})
        subjects.raise_for_status()
        doomed = sorted(s for s in subjects.json() if containing in s)
        for subject in doomed:
            path = f"/subjects/{quote(subject, safe='')}"
            for params in ({}, {"permanent": "true"}):
                response = client.delete(path, params=params)
                # 404: not there (any more); 40401/40404/40405: already (soft-)deleted
                assert response.status_code in (200, 404), response.text
    return doomed


def delete_group(settings: Settings, group: str, within: float = 45.0) -> None:
    """Delete a consumer group (a lane's sink's); absent is no error. A group whose member
    has just stopped may still count it until its session expires: retried for ``within``."""
    from etar.topics import admin

    deadline = time.monotonic() + within
    client = admin(settings)  # kept alive until its futures are done
    while True:
        future = client.delete_consumer_groups([group], request_timeout=30)[group]
        try:
            future.result(timeout=30)
            return
        except Exception as exc:
            if "GROUP_ID_NOT_FOUND" in str(exc):
                return
            if "NON_EMPTY_GROUP" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(1)


def leftovers(settings: Settings) -> list[str]:
    """What of a lane is still on the stack: its topics, consumer group, table, bucket."""
    from etar.extract import storage
    from etar.topics import admin
    from etar.warehouse import table as warehouse

    client = admin(settings)
    found = [f"topic {t}" for t in client.list_topics(timeout=30).topics
             if t in (settings.kafka_topic, settings.kafka_dlq_topic)]
    groups = client.list_consumer_groups(request_timeout=30).result(timeout=30)
    found += [f"group {g.group_id}" for g in groups.valid
              if g.group_id == settings.sink_group_id]
    if warehouse.client(settings).command(f"EXISTS TABLE {settings.clickhouse_table}") == 1:
        found.append(f"table {settings.clickhouse_table}")
    if storage.client(settings).bucket_exists(settings.s3_bucket):
        found.append(f"bucket {settings.s3_bucket}")
    return found


@contextmanager
def scratch_database(settings: Settings, prefix: str) -> Iterator[str]:
    """A ClickHouse database of the caller's own (``<prefix>_<random>``), dropped after."""
    from etar.warehouse import table as warehouse

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = warehouse.client(settings)
    admin.command(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        admin.command(f"DROP DATABASE IF EXISTS {name}")

"""Kafka → ClickHouse: the stack's sink, and sinks on lanes of their own (topic, table, group).

Events are stamped in recent minutes (inside the table's retention TTL); counts read with
FINAL, since the table collapses replayed rows by event_id.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
import uuid
from datetime import UTC
from pathlib import Path

import pandas as pd
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from etar import warehouse
from etar.config import Settings
from tests.integration.lanes import (
    expected_events,
    produce,
    recent_minute,
    start_sink,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_stack_sink_ingests_produced_minutes(stack_settings: Settings) -> None:
    first, second = recent_minute(7), recent_minute(6)
    before = {m: warehouse.count_minute(m) for m in (first, second)}
    seed = random.randrange(1, 10_000)
    produce(stack_settings, 1_500, first, seed)
    produce(stack_settings, 700, second, seed + 1)
    wait_for(lambda: warehouse.count_minute(first) - before[first] == 1_500
             and warehouse.count_minute(second) - before[second] == 700, 60,
             "the stack's sink to ingest both minutes")


def test_column_values_round_trip(lane: Settings, lane_sink: subprocess.Popen[bytes]) -> None:
    minute, seed, count = recent_minute(3), 21, 400
    produce(lane, count, minute, seed)
    ch = warehouse.client(lane)
    wait_for(lambda: warehouse.count_minute(minute, ch, lane) == count, 60, "ingestion")
    stored = warehouse.read_minute(minute, ch, lane)
    by_id = {row.event_id: row for row in stored.itertuples(index=False)}
    events = expected_events(count, minute, seed)
    assert set(by_id) == {e.event_id for e in events}
    nulls = 0
    for event in events:
        row = by_id[event.event_id]
        assert (row.user_id, row.session_id) == (event.user_id, event.session_id)
        assert (row.event_type, row.status, row.device) == (
            event.event_type.value, event.status.value, event.device)
        assert row.event_ts.tz_localize(UTC).to_pydatetime() == event.event_ts  # to the ms
        for column in ("error_code", "error_message", "product_id", "search_query",
                       "currency", "referrer", "country", "page_url"):
            value = getattr(row, column)
            expected = getattr(event, column)
            if expected is None:
                nulls += 1
                assert pd.isna(value), column
            else:
                assert value == expected, column
        if event.price is None:
            assert pd.isna(row.price)
        else:
            assert row.price == pytest.approx(event.price)
    assert nulls > 0


def test_sigkill_mid_stream_loses_and_doubles_nothing(lane: Settings, tmp_path: Path) -> None:
    minute, count = recent_minute(4), 12_000
    log = tmp_path / "sink.log"
    first = start_sink(lane, log)
    producer = produce(lane, count, minute, seed=5, rate=3_000, background=True)
    assert producer is not None
    ch = warehouse.client(lane)
    wait_for(lambda: warehouse.count_minute(minute, ch, lane) > 1_000, 60, "the first rows")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed_at = warehouse.count_minute(minute, ch, lane)
    assert killed_at < count, "the sink was killed too late to test anything"
    second = start_sink(lane, log)
    try:
        _, err = producer.communicate(timeout=120)
        assert producer.returncode == 0, err
        wait_for(lambda: warehouse.count_minute(minute, ch, lane) == count, 120,
                 f"{count} rows after the restart")
        time.sleep(2)  # anything still in flight would now overshoot
        assert warehouse.count_minute(minute, ch, lane) == count
        distinct = ch.command(f"SELECT uniqExact(event_id) FROM {lane.clickhouse_table}")
        assert distinct == count
    finally:
        second.terminate()
        second.wait(30)


def test_poison_messages_go_to_the_dead_letter_topic(lane: Settings,
                                                     lane_sink: subprocess.Popen[bytes]) -> None:
    producer = Producer({"bootstrap.servers": lane.kafka_bootstrap_servers})
    key = uuid.uuid4().bytes
    poison = [(key, b"not avro at all"),
              (key, b"\x00" + (999_999).to_bytes(4, "big") + b"\x02\x04junk"),
              (b"short", b"\x00\x00\x00\x00\x01")]
    for k, v in poison:
        producer.produce(lane.kafka_topic, key=k, value=v, partition=0)
    producer.flush(10)
    minute = recent_minute(2)
    produce(lane, 300, minute, seed=8)
    wait_for(lambda: warehouse.count_minute(minute, settings=lane) == 300, 60,
             "good events behind the poison ones")

    consumer = Consumer({"bootstrap.servers": lane.kafka_bootstrap_servers,
                         "group.id": f"dlq-reader-{uuid.uuid4()}"})
    consumer.assign([TopicPartition(lane.kafka_dlq_topic, 0, 0)])
    dead = []
    deadline = time.monotonic() + 30
    while len(dead) < len(poison) and time.monotonic() < deadline:
        message = consumer.poll(1)
        if message is not None and message.error() is None:
            dead.append(message)
    consumer.close()
    assert [m.value() for m in dead] == [v for _, v in poison]
    for offset, message in enumerate(dead):
        headers = {k: v.decode() for k, v in message.headers()}
        assert headers["__connect.errors.topic"] == lane.kafka_topic
        assert headers["__connect.errors.partition"] == "0"
        assert headers["__connect.errors.offset"] == str(offset)
        assert headers["__connect.errors.exception.message"]
    assert "999999" in dict(dead[1].headers())["__connect.errors.exception.message"].decode()


def test_minute_query_reads_one_partition(lane: Settings,
                                          lane_sink: subprocess.Popen[bytes]) -> None:
    minutes = [recent_minute(12), recent_minute(11), recent_minute(10)]
    for index, minute in enumerate(minutes):
        produce(lane, 500 + 100 * index, minute, seed=30 + index)
    ch = warehouse.client(lane)
    wait_for(lambda: all(warehouse.count_minute(m, ch, lane) == 500 + 100 * i
                         for i, m in enumerate(minutes)), 60, "three minutes")
    # One part per minute, so no background merge changes the part count under the test.
    ch.command(f"OPTIMIZE TABLE {lane.clickhouse_table} FINAL")
    parts = warehouse.partitions(ch, lane)
    assert len(parts) == 3 and parts["parts"].tolist() == [1, 1, 1]
    target = parts[parts["event_minute"] == minutes[1].start.replace(tzinfo=None)].iloc[0]
    plan = warehouse.minute_plan(minutes[1], ch, lane)
    assert plan["parts_selected"] == target["parts"] < plan["parts_total"]
    assert plan["read_rows"] == target["rows"]  # the other minutes' rows are never read
    assert plan["result_rows"] == 600

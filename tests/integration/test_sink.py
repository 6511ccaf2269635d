"""Kafka → ClickHouse: the stack's sink, and sinks on lanes of their own (topic, table, group).

Events are stamped in recent minutes (inside the table's retention TTL). "Doubles nothing" is
checked by counting rows without FINAL (which sees duplicates) once the sink has settled, as
well as with FINAL and by distinct event_id.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro import parse_schema, schemaless_writer

from etar.config import Settings
from etar.events.event import EventGenerator, GeneratorConfig
from etar.events.serde import UUIDKeySerializer, event_serializer, registry_client
from etar.sink.batch import Batch, SinkError
from etar.sink.consumer import Sink
from etar.sink.dead_letters import REPLACED_HEADER
from etar.topics import align_topics, ensure_topic, set_topic_config, topic_config
from etar.warehouse import table as warehouse
from tests.integration.lanes import (
    env_for,
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


def _counts(ch: Client, table: str) -> tuple[int, int, int]:
    """Rows without FINAL (sees duplicates), rows with FINAL, distinct event ids."""
    raw = int(ch.command(f"SELECT count() FROM {table}"))
    final = int(ch.command(f"SELECT count() FROM {table} FINAL"))
    distinct = int(ch.command(f"SELECT uniqExact(event_id) FROM {table}"))
    return raw, final, distinct


def _settle(ch: Client, table: str, count: int, timeout: float) -> None:
    """Wait until every row is in, then long enough for anything in flight to overshoot."""
    wait_for(lambda: _counts(ch, table)[1] >= count, timeout, f"{count} rows")
    time.sleep(3)


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
        _settle(ch, lane.clickhouse_table, count, 120)
        assert _counts(ch, lane.clickhouse_table) == (count, count, count)
    finally:
        second.terminate()
        second.wait(30)


def test_a_rebalance_between_two_sinks_doubles_nothing(lane: Settings, tmp_path: Path) -> None:
    """A second member joins mid-stream (cooperative revoke), then the first one leaves."""
    minute, count = recent_minute(5), 9_000
    log = tmp_path / "sink.log"
    first = start_sink(lane, log)
    producer = produce(lane, count, minute, seed=6, rate=2_000, background=True)
    assert producer is not None
    ch = warehouse.client(lane)
    wait_for(lambda: warehouse.count_minute(minute, ch, lane) > 1_000, 60, "the first rows")
    second = start_sink(lane, log)
    try:
        wait_for(lambda: warehouse.count_minute(minute, ch, lane) > 5_000, 60, "more rows")
        first.terminate()
        assert first.wait(30) == 0
        _, err = producer.communicate(timeout=120)
        assert producer.returncode == 0, err
        _settle(ch, lane.clickhouse_table, count, 120)
        assert _counts(ch, lane.clickhouse_table) == (count, count, count)
        assert "revoking" not in log.read_text()  # no failed commit on revoke
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


_BIG = str(8 * 1024 * 1024)


@pytest.fixture
def big_lane(stack_settings: Settings, unique: str) -> Iterator[Settings]:
    """A lane whose topics take messages of several MB (for the oversized poison)."""
    settings = stack_settings.model_copy(update={
        "kafka_topic": f"big_{unique}", "kafka_dlq_topic": f"big_{unique}_dlq",
        "clickhouse_table": f"big_{unique}", "sink_group_id": f"big-{unique}",
        "sink_batch_rows": 2_000, "sink_batch_seconds": 0.5})
    ensure_topic(settings, settings.kafka_topic, 2, {"max.message.bytes": _BIG})
    ensure_topic(settings, settings.kafka_dlq_topic, 1, {"max.message.bytes": _BIG})
    warehouse.apply_schema(settings=settings)
    yield settings
    warehouse.client(settings).command(f"DROP TABLE IF EXISTS {settings.clickhouse_table}")


def _dead_letters(settings: Settings, expected: int, timeout: float = 60) -> list[Message]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "group.id": f"dlq-reader-{uuid.uuid4()}"})
    consumer.assign([TopicPartition(settings.kafka_dlq_topic, 0, 0)])
    dead: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(dead) < expected and time.monotonic() < deadline:
        message = consumer.poll(1)
        if message is not None and message.error() is None:
            dead.append(message)
    extra = consumer.poll(3)  # nothing more may follow
    consumer.close()
    assert extra is None or extra.error() is not None, "more dead letters than poison"
    return dead


def test_every_kind_of_poison_among_valid_events(big_lane: Settings, tmp_path: Path) -> None:
    """Valid events land exactly once; each poison message is a dead letter once, with why."""
    lane = big_lane
    registry = registry_client(lane)
    other = {"type": "record", "name": "Other", "namespace": "test",
             "fields": [{"name": "n", "type": "long"}]}
    other_id = registry.register_schema(f"{lane.kafka_topic}-other-value",
                                        Schema(json.dumps(other), "AVRO"))
    other_body = io.BytesIO()
    schemaless_writer(other_body, parse_schema(other), {"n": 42})
    serialize = event_serializer(registry)
    keys = UUIDKeySerializer()
    ctx = SerializationContext(lane.kafka_topic, MessageField.VALUE)
    events = EventGenerator(GeneratorConfig(seed=99)).take(600)
    valid = [(keys(e.user_id), serialize(e, ctx)) for e in events]
    key, value = valid[0]
    assert key is not None and value is not None
    schema_id = int.from_bytes(value[1:5], "big")
    bad_enum = bytearray(value)
    bad_enum[5 + 3 * 37] = 40  # event_type's enum index (after three UUID strings): 20
    poison: list[tuple[bytes | None, bytes | None, str]] = [
        (key, b"not avro at all", "not Confluent-framed"),
        (key, b"\x00" + (999_999).to_bytes(4, "big") + value[5:], "unknown schema id 999999"),
        (key, b"\x00" + other_id.to_bytes(4, "big") + other_body.getvalue(),
         "another schema (Other)"),
        (b"short", value, "bad key"),
        (uuid.uuid4().bytes, value, "bad key"),
        (key, None, "tombstone"),
        (key, value[:-3], "ClickHouse refused the row"),  # truncated: framing and key fine
        (key, bytes(bad_enum), "ClickHouse refused the row"),
        (key, b"\x00" + schema_id.to_bytes(4, "big") + b"x" * (5 * 1024 * 1024), "oversized"),
    ]
    producer = Producer({"bootstrap.servers": lane.kafka_bootstrap_servers,
                         "message.max.bytes": int(_BIG)})
    sent: list[tuple[int, bytes | None, bytes | None, str]] = []  # partition, key, value, why
    for index, (k, v) in enumerate(valid):  # poison between valid events, same batch
        producer.produce(lane.kafka_topic, key=k, value=v, partition=index % 2)
        if index % 60 == 30 and poison:
            pk, pv, why = poison.pop(0)
            producer.produce(lane.kafka_topic, key=pk, value=pv, partition=index % 2)
            sent.append((index % 2, pk, pv, why))
    assert not poison and producer.flush(30) == 0

    sink = start_sink(lane, tmp_path / "sink.log")
    try:
        ch = warehouse.client(lane)
        _settle(ch, lane.clickhouse_table, len(valid), 90)
        assert _counts(ch, lane.clickhouse_table) == (len(valid),) * 3
        stored = {row[0] for row in ch.query(
            f"SELECT event_id FROM {lane.clickhouse_table}").result_rows}
        assert stored == {e.event_id for e in events}
        dead = _dead_letters(lane, len(sent))
    finally:
        sink.terminate()
        sink.wait(30)
    by_value = {}
    for message in dead:
        headers = {k: v.decode() for k, v in message.headers()}
        assert headers["__connect.errors.topic"] == lane.kafka_topic
        assert headers["__connect.errors.connector.name"] == "etar-sink"
        by_value[(int(headers["__connect.errors.partition"]), message.key(),
                  message.value())] = headers
    assert len(by_value) == len(dead) == len(sent)
    for partition, key_sent, value_sent, why in sent:
        reason = by_value[(partition, key_sent, value_sent)]["__connect.errors.exception.message"]
        assert why in reason, (why, reason)


class _FailsAfterInsert:
    """A ClickHouse client whose first insert goes in and then reports a timeout."""

    def __init__(self, ch: Client) -> None:
        self.ch, self.calls = ch, 0

    def raw_insert(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        result = self.ch.raw_insert(*args, **kwargs)
        if self.calls == 1:
            raise OperationalError("read timed out (injected after the rows went in)")
        return result


def test_a_retried_insert_that_already_went_in_is_not_doubled(lane: Settings) -> None:
    serialize = event_serializer(registry_client(lane))
    ctx = SerializationContext(lane.kafka_topic, MessageField.VALUE)
    events = EventGenerator(GeneratorConfig(seed=11)).take(500)
    ch = warehouse.client(lane)
    flaky = _FailsAfterInsert(ch)
    sink = Sink(lane, ch=flaky)  # type: ignore[arg-type]
    batch = Batch()
    for offset, event in enumerate(events):
        batch.add((lane.kafka_topic, 0), offset, 1, [], event.user_id.bytes,
                  serialize(event, ctx), None, None, 0.0)
    sink.shared.epochs[(lane.kafka_topic, 0)] = 1
    ready = batch.take_ready(lambda tp: False)
    assert sink.inserter.insert(ready) == {(lane.kafka_topic, 0): (500, 1)}
    assert flaky.calls == 2
    assert _counts(ch, lane.clickhouse_table) == (500, 500, 500)


def test_a_permanent_clickhouse_error_stops_the_sink_without_committing(lane: Settings) -> None:
    produce(lane, 50, recent_minute(2), seed=12)
    warehouse.client(lane).command(f"DROP TABLE {lane.clickhouse_table}")
    sink = Sink(lane)
    started = time.monotonic()
    with pytest.raises(SinkError, match="a retry cannot fix"):
        sink.run(until=lambda: time.monotonic() - started > 60)
    assert time.monotonic() - started < 60
    consumer = Consumer({"bootstrap.servers": lane.kafka_bootstrap_servers,
                         "group.id": lane.sink_group_id})
    committed = consumer.committed([TopicPartition(lane.kafka_topic, p) for p in range(3)], 10)
    consumer.close()
    assert [tp.offset for tp in committed if tp.offset > 0] == []  # at most a plan at 0


def produce_at_limit(settings: Settings, partition: int = 0) -> tuple[int, int]:
    """Write the largest record the event topic accepts (random bytes: no compression helps;
    about 1 MiB under the broker's default limit) framed like an event; (offset, value size)."""
    limit = int(topic_config(settings, settings.kafka_topic)["max.message.bytes"])
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "message.max.bytes": limit + 1_000_000, "compression.type": "none"})
    key = uuid.uuid4().bytes
    outcome: list[tuple[KafkaError | None, int | None]] = []
    for overhead in range(60, 400, 4):  # the record batch's framing, found by the broker
        size = limit - overhead
        value = b"\x00\x00\x00\x00\x01" + os.urandom(size - 5)
        outcome.clear()
        producer.produce(settings.kafka_topic, key=key, value=value, partition=partition,
                         on_delivery=lambda err, msg: outcome.append((err, msg.offset())))
        assert producer.flush(30) == 0
        error, offset = outcome[0]
        if error is None:
            assert offset is not None
            return offset, size
        assert error.code() == KafkaError.MSG_SIZE_TOO_LARGE, error
    raise AssertionError(f"no record near {limit} bytes was accepted")


def _read_dead_letters(settings: Settings, count: int) -> list[Message]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "group.id": f"dlq-reader-{uuid.uuid4()}",
                         "fetch.max.bytes": 64 * 1024 * 1024})
    consumer.assign([TopicPartition(settings.kafka_dlq_topic, 0, 0)])
    dead: list[Message] = []
    deadline = time.monotonic() + 60
    while len(dead) < count and time.monotonic() < deadline:
        message = consumer.poll(1)
        if message is not None and message.error() is None:
            dead.append(message)
    consumer.close()
    return dead


def test_a_message_at_the_topic_limit_is_dead_lettered_and_the_sink_goes_on(
        lane: Settings, tmp_path: Path) -> None:
    """The stack aligns the dead-letter topic with the event topic (as at every stack start):
    a record as large as the event topic takes, plus the error headers, is dead-lettered whole
    (before, MSG_SIZE_TOO_LARGE stopped the sink at every restart), and events after it go in."""
    align_topics(lane)
    minute = recent_minute(3)
    offset, size = produce_at_limit(lane)
    assert size > 1_000_000
    sink = start_sink(lane, tmp_path / "sink.log")
    try:
        produce(lane, 300, minute, seed=41)
        wait_for(lambda: warehouse.count_minute(minute, settings=lane) == 300, 90,
                 "the events behind the large one")
        assert sink.poll() is None, (tmp_path / "sink.log").read_text()[-2000:]
    finally:
        sink.terminate()
        sink.wait(30)
    (dead,) = _read_dead_letters(lane, 1)
    headers = dict(dead.headers() or [])
    assert len(dead.value() or b"") == size and REPLACED_HEADER not in headers
    assert headers["__connect.errors.offset"] == str(offset).encode()
    assert b"oversized" in headers["__connect.errors.exception.message"]


def test_a_dead_letter_too_large_for_its_topic_is_replaced_by_its_coordinates(
        lane: Settings, tmp_path: Path) -> None:
    """A dead-letter topic whose limit someone lowered by hand: the dead letter is written as
    a record of its coordinates and reason instead, and the sink goes on."""
    set_topic_config(lane, lane.kafka_dlq_topic, {"max.message.bytes": "100000"})
    producer = Producer({"bootstrap.servers": lane.kafka_bootstrap_servers})
    key, value = uuid.uuid4().bytes, b"\x00\x00\x00\x00\x01" + os.urandom(400_000)
    stamps: list[int] = []
    producer.produce(lane.kafka_topic, key=key, value=value, partition=1,
                     on_delivery=lambda err, msg: stamps.append(msg.timestamp()[1]))
    assert producer.flush(30) == 0 and stamps
    minute = recent_minute(3)
    produce(lane, 200, minute, seed=42)
    sink = start_sink(lane, tmp_path / "sink.log")
    try:
        wait_for(lambda: warehouse.count_minute(minute, settings=lane) == 200, 90,
                 "the events beside the large one")
        (dead,) = _read_dead_letters(lane, 1)
        assert sink.poll() is None
    finally:
        sink.terminate()
        sink.wait(30)
    body = json.loads(dead.value() or b"")
    assert (body["topic"], body["partition"], body["offset"]) == (lane.kafka_topic, 1, 0)
    assert body["timestamp"] == stamps[0] and body["value_bytes"] == len(value)
    assert body["key"] is not None and dead.key() == key
    assert "oversized" in body["reason"] and "MSG_SIZE_TOO_LARGE" in body["replaced"]
    assert REPLACED_HEADER in dict(dead.headers() or [])
    log = (tmp_path / "sink.log").read_text()
    assert "replaced by its coordinates" in log and "replaced_dead_letters=1" in log


def test_a_sink_failure_ends_with_one_error_line(lane: Settings) -> None:
    produce(lane, 20, recent_minute(2), seed=43)
    warehouse.client(lane).command(f"DROP TABLE {lane.clickhouse_table}")
    result = subprocess.run([sys.executable, "-m", "etar.sink.consumer"], env=env_for(lane),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: sink stopped: ") and "a retry cannot fix" in last, last
    assert sum(line.startswith("error:") for line in result.stderr.splitlines()) == 1

"""A minute is complete only once the sink committed everything sent before its cut-off."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.serialization import MessageField, SerializationContext

from etar.config import Settings
from etar.events.event import EventGenerator, GeneratorConfig, clock_within_minute
from etar.events.serde import UUIDKeySerializer, event_serializer, registry_client
from etar.minute import Minute
from etar.orchestration.completeness import check_minute, cutoff
from etar.topics import align_topics, topic_config
from etar.warehouse import table as warehouse
from tests.integration.lanes import env_for, start_sink, wait_for

pytestmark = pytest.mark.integration


def _minute_ending_soon(lead: float) -> Minute:
    """The minute that ends next, after sleeping until ``lead`` seconds before its end."""
    minute = Minute.containing(datetime.now(UTC))
    if (minute.end - datetime.now(UTC)).total_seconds() < lead:
        minute = minute.next
    time.sleep(max(0.0, (minute.end - datetime.now(UTC)).total_seconds() - lead))
    return minute


def test_a_slow_sink_holds_the_minute_until_it_committed_it(lane: Settings,
                                                            tmp_path: Path) -> None:
    # The sink's first flush comes 40 s after its first message: long after the cut-off.
    slow = lane.model_copy(update={"sink_batch_seconds": 40.0, "sink_idle_flush_seconds": 40.0,
                                   "sink_batch_rows": 1_000_000,
                                   "pipeline_lateness_seconds": 5.0})
    sink = start_sink(slow, tmp_path / "sink.log")
    try:
        minute = _minute_ending_soon(lead=15)
        assert not check_minute(minute, slow).complete  # still open
        # Live events in the minute's last seconds, stamped inside it.
        produced = subprocess.run(
            [sys.executable, "-m", "etar", "produce", "--rate", "300", "--duration", "4",
             "--seed", "5", "--minute", str(minute)], env=env_for(slow), capture_output=True,
            text=True, timeout=120, check=True)
        delivered = int(produced.stdout.split("delivered=")[1].split()[0])
        assert delivered > 800
        assert datetime.now(UTC) < cutoff(minute, slow), "the producer ran past the cut-off"
        time.sleep(max(0.0, (cutoff(minute, slow) - datetime.now(UTC)).total_seconds()))
        held = check_minute(minute, slow)
        assert not held.complete and sum(held.behind.values()) == delivered, held
        assert warehouse.count_minute(minute, settings=slow) < delivered
        wait_for(lambda: check_minute(minute, slow).complete, 90, "the sink to commit")
        # Complete means queryable: every event of the minute is in ClickHouse.
        assert warehouse.count_minute(minute, settings=slow) == delivered
    finally:
        sink.terminate()
        sink.wait(30)


def test_a_stopped_sink_never_completes_a_minute(lane: Settings) -> None:
    # A lateness long enough that the 50 messages sent now were sent before the cut-off.
    late = lane.model_copy(update={"pipeline_lateness_seconds": 600.0})
    minute = Minute.last_closed()
    subprocess.run([sys.executable, "-m", "etar", "produce", "--count", "50", "--rate", "0"],
                   env=env_for(late), capture_output=True, timeout=120, check=True)
    state = check_minute(minute, late, now=cutoff(minute, late))  # no sink runs on this lane
    assert not state.complete and sum(state.behind.values()) == 50, state
    assert "50 messages" in state.reason


def _serialized(lane: Settings, minute: Minute, count: int, seed: int
                ) -> list[tuple[bytes | None, bytes | None]]:
    """``count`` events stamped (event_ts) inside ``minute``, as the sink reads them."""
    serialize = event_serializer(registry_client(lane))
    ctx = SerializationContext(lane.kafka_topic, MessageField.VALUE)
    keys = UUIDKeySerializer()
    clock = clock_within_minute(minute, random.Random(seed))
    return [(keys(e.user_id), serialize(e, ctx))
            for e in EventGenerator(GeneratorConfig(seed=seed), clock).take(count)]


def test_in_minute_records_behind_a_record_stamped_after_the_cut_off_are_waited_for(
        lane: Settings, tmp_path: Path) -> None:
    """Two producers on one partition: the first stamps its record after the cut-off (its
    clock runs ahead, or its batch waited out a broker restart), the second then writes events
    of the minute. With producer timestamps (CreateTime) ``offsets_for_times`` found the
    stamped record and the minute was complete once the sink had committed up to it, without
    the events behind it. With broker time (LogAppendTime, set by the stack) every record
    appended before the cut-off counts, so the minute waits until they are committed."""
    align_topics(lane)  # what `etar stack up` does to the event topic, at every start
    align_topics(lane)  # (idempotent)
    assert topic_config(lane, lane.kafka_topic)["message.timestamp.type"] == "LogAppendTime"
    settings = lane.model_copy(update={"pipeline_lateness_seconds": 120.0})
    minute = Minute.containing(datetime.now(UTC))
    until = cutoff(minute, settings)  # ≥ 2 minutes away: every record below is appended before
    ahead = Producer({"bootstrap.servers": lane.kafka_bootstrap_servers})
    key, value = _serialized(lane, minute.next.next.next, 1, seed=70)[0]
    ahead.produce(lane.kafka_topic, key=key, value=value, partition=0,
                  timestamp=int(until.timestamp() * 1000) + 1_000)
    assert ahead.flush(30) == 0
    behind = Producer({"bootstrap.servers": lane.kafka_bootstrap_servers})
    events = _serialized(lane, minute, 50, seed=71)
    for key, value in events:
        behind.produce(lane.kafka_topic, key=key, value=value, partition=0)
    assert behind.flush(30) == 0
    # The sink has committed everything before the record stamped after the cut-off.
    group = Consumer({"bootstrap.servers": lane.kafka_bootstrap_servers,
                      "group.id": lane.sink_group_id, "enable.auto.commit": False})
    group.commit(offsets=[TopicPartition(lane.kafka_topic, 0, 0)], asynchronous=False)
    group.close()
    later = until + timedelta(seconds=5)
    held = check_minute(minute, settings, now=later)
    assert not held.complete and held.behind == {0: 51}, held
    sink = start_sink(settings, tmp_path / "sink.log")
    try:
        wait_for(lambda: check_minute(minute, settings, now=later).complete, 60,
                 "the sink to commit the minute")
        assert warehouse.count_minute(minute, settings=settings) == len(events)
    finally:
        sink.terminate()
        sink.wait(30)
